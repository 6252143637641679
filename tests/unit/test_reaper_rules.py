"""The reaper's decisions and its state file, without EC2 or HTTP."""

import json

import pytest

from server_responder.reaper.program import (
    KEEP, STOP, Poll, UnreachableLog, UsageError, judge, parse_overrides, valid_last_job,
)

IDLE = {"idle_seconds": 1000.0, "running_jobs": 0, "queued_jobs": 0}


def test_idle_long_enough_with_nothing_to_do_is_stopped():
    assert judge(Poll(document=IDLE), 0.0, 900, 1800, None).action == STOP


@pytest.mark.parametrize("document", [
    {**IDLE, "idle_seconds": 899.0},
    {**IDLE, "running_jobs": 1},
    {**IDLE, "queued_jobs": 3},
])
def test_busy_or_recently_working_box_is_kept(document):
    assert judge(Poll(document=document), 0.0, 900, 1800, None).action == KEEP


def test_results_still_uploading_hold_an_idle_box_for_one_more_threshold():
    uploading = {**IDLE, "pending_uploads": 3}
    judgement = judge(Poll(document=uploading), 0.0, 900, 1800, None)
    assert judgement.action == KEEP and "3 results still uploading" in judgement.reason
    assert judge(Poll(document={**uploading, "idle_seconds": 1800.0}), 0.0, 900, 1800, None).action == STOP


def test_a_single_failed_poll_never_stops_an_instance():
    judgement = judge(Poll(error="connection refused"), 5000.0, 900, 0.0001, None)
    assert judgement.action == KEEP and judgement.unreachable_since == 5000.0


def test_unreachable_is_stopped_only_after_the_threshold():
    assert judge(Poll(error="timeout"), 2799.0, 900, 1800, 1000.0).action == KEEP
    judgement = judge(Poll(error="timeout"), 2800.0, 900, 1800, 1000.0)
    assert judgement.action == STOP and judgement.unreachable_since == 1000.0 and "timeout" in judgement.reason


@pytest.mark.parametrize("document, valid", [
    (IDLE, True),
    ({"last_time": "2014-01-01T00:00:00Z"}, False),
    ({**IDLE, "running_jobs": True}, False),
    ({**IDLE, "queued_jobs": -1}, False),
    ({**IDLE, "idle_seconds": "600"}, False),
    ([IDLE], False),
])
def test_only_a_document_that_says_how_busy_the_box_is_counts_as_an_answer(document, valid):
    assert valid_last_job(document) is valid


def test_address_overrides():
    assert parse_overrides(["i-1=127.0.0.1:8080", "i-2=[::1]:9"]) == {"i-1": "127.0.0.1:8080", "i-2": "[::1]:9"}
    for bad in ("127.0.0.1:8080", "i-1=127.0.0.1", "i-1=:80", "x=127.0.0.1:80"):
        with pytest.raises(UsageError, match="--address-override"):
            parse_overrides([bad])


def test_state_file_round_trip(tmp_path):
    path = tmp_path / "deep" / "reaper.json"
    state = UnreachableLog(path)
    assert state.since("i-1") is None
    state.replace({"i-1": {"since": "1970-01-01T00:16:40Z", "address": "10.0.0.1", "error": "timeout"}})
    state.save()
    assert UnreachableLog(path).since("i-1") == 1000.0
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_damaged_state_file_starts_afresh_and_says_so(tmp_path):
    path = tmp_path / "reaper.json"
    for damaged in ("{", json.dumps({"something": "else"})):
        path.write_text(damaged)
        state = UnreachableLog(path)
        assert state.entries == {} and "--state-file" in state.problem
