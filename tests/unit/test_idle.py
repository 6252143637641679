"""The idle state the box reports, and the persisted last-job record."""

import json
import time

from server_responder.lifecycle.idle import IdleClock, IdleStatus


def status(**changes):
    values = dict(now=1000.0, booted_at=100.0, last_started=None, last_finished=None, running_jobs=0,
                  queued_jobs=0, draining=False)
    values.update(changes)
    return IdleStatus(**values)


def test_idle_since_boot_when_no_job_ever_ran():
    assert status().idle_seconds == 900.0


def test_idle_since_the_later_of_the_last_start_and_end():
    assert status(last_started=400.0, last_finished=700.0).idle_seconds == 300.0
    assert status(last_started=800.0, last_finished=700.0).idle_seconds == 200.0


def test_a_job_before_boot_does_not_make_a_fresh_box_look_idle_for_long():
    assert status(booted_at=950.0, last_finished=10.0).idle_seconds == 50.0


def test_not_idle_while_anything_is_queued_or_running():
    assert status(running_jobs=1).idle_seconds == 0
    assert status(queued_jobs=2).idle_seconds == 0


def test_drained_only_when_draining_and_nothing_is_left():
    assert not status().drained
    assert not status(draining=True, queued_jobs=1).drained
    assert status(draining=True).drained


def test_document_has_every_field_in_utc():
    document = status(last_started=0.0, last_finished=60.0).document()
    assert document == {"last_time": "1970-01-01T00:01:00Z", "last_started": "1970-01-01T00:00:00Z",
                        "last_finished": "1970-01-01T00:01:00Z", "running_jobs": 0, "queued_jobs": 0,
                        "booted_at": "1970-01-01T00:01:40Z", "idle_seconds": 900.0, "pending_uploads": 0,
                        "draining": False, "drained": False}


def test_record_is_written_at_start_and_end_and_read_back(tmp_path):
    path = tmp_path / "last_job.json"
    moments = iter([5.0, 10.0, 20.0, 30.0])
    clock = IdleClock(path, now=lambda: next(moments))
    clock.job_started()
    clock.job_finished()
    assert json.loads(path.read_text()) == {"last_started": 10.0, "last_finished": 20.0}
    reread = IdleClock(path, now=lambda: 40.0).status({"running_jobs": 0, "queued_jobs": 0}, False)
    assert (reread.last_started, reread.last_finished, reread.booted_at) == (10.0, 20.0, 40.0)


def test_unreadable_record_counts_as_no_job(tmp_path):
    path = tmp_path / "last_job.json"
    path.write_text('{"last_started": "yesterday"')
    assert IdleClock(path).status({}, False).last_activity is None
    path.write_text('{"last_started": true, "last_finished": "x"}')
    assert IdleClock(path).status({}, False).last_activity is None


def test_a_busy_clock_writes_once_per_interval_and_the_latest_moments_follow(tmp_path):
    path = tmp_path / "last_job.json"
    now = [100.0]
    clock = IdleClock(path, now=lambda: now[0], write_interval=3600)
    clock.job_started()
    assert json.loads(path.read_text()) == {"last_started": 100.0, "last_finished": None}
    now[0] = 101.0
    clock.job_finished()
    clock.job_started()
    # Within the interval the file keeps the first write; the later moments wait, in memory.
    assert json.loads(path.read_text()) == {"last_started": 100.0, "last_finished": None}
    assert clock.status({}, False).last_finished == 101.0
    clock.flush()
    assert json.loads(path.read_text()) == {"last_started": 101.0, "last_finished": 101.0}


def test_a_deferred_write_happens_by_itself(tmp_path):
    path = tmp_path / "last_job.json"
    clock = IdleClock(path, write_interval=0.2)
    clock.job_started()
    clock.job_finished()
    deadline = time.monotonic() + 5
    while json.loads(path.read_text())["last_finished"] is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert json.loads(path.read_text())["last_finished"] is not None
