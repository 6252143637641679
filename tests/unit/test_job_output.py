"""The live output buffer: bounded, each reader at its own position, whole characters only."""

from __future__ import annotations

import pytest

from server_responder.jobs.output import BadPosition, LiveOutput, Position, finished_events
from server_responder.jobs.record import Job
from server_responder.settings import Settings


def finished(status="succeeded", **fields) -> Job:
    return Job(id="j" * 40, type="script", spec={}, results_location="results/x", status=status, **fields)


def events_of(output: LiveOutput, position=Position()) -> list:
    return list(output.follow(position, keepalive_seconds=0.01))


def test_a_reader_behind_the_buffer_is_told_what_it_missed():
    output = LiveOutput(limit=10)
    output.set_status("running")
    for part in (b"aaaa", b"bbbb", b"cccc", b"dddd"):
        output.publish("stdout", part)
    output.publish("stderr", b"E")
    output.end(finished(stdout="aaaabbbbccccdddd", stderr="E"))
    events = events_of(output)
    kinds = [(event.kind, event.data, event.id) for event in events]
    # Read once the job is over: its final status comes with its record, not the running one before.
    assert kinds[:3] == [
        ("dropped", {"stream": "stdout", "bytes": 8}, "8-0"),
        ("stdout", {"text": "cccc"}, "12-0"),
        ("stdout", {"text": "dddd"}, "16-0"),
    ]
    assert kinds[3] == ("stderr", {"text": "E"}, "16-1")
    assert [event.kind for event in events[4:]] == ["status", "job"]


def test_a_position_inside_a_chunk_resumes_after_it_without_repeating():
    output = LiveOutput(limit=100)
    output.publish("stdout", b"hello world")
    output.end(finished(stdout="hello world"))
    events = events_of(output, Position(6, 0))
    assert [(event.kind, event.data.get("text")) for event in events][0] == ("stdout", "world")


def test_a_character_split_between_reads_arrives_whole():
    output = LiveOutput(limit=100)
    snowman = "☃".encode()
    output.publish("stdout", b"a" + snowman[:1])
    output.publish("stdout", snowman[1:] + b"b")
    output.end(finished())
    texts = [event.data["text"] for event in events_of(output) if event.kind == "stdout"]
    assert texts == ["a", "☃b"]


def test_finished_events_replay_the_record_from_a_position():
    job = finished(stdout="one\ntwo\n", stderr="err\n")
    events = list(finished_events(job, Position(4, 0)))
    assert [(event.kind, event.data.get("text"), event.id) for event in events[:2]] == [
        ("stdout", "two\n", "8-0"), ("stderr", "err\n", "8-4")]
    assert events[-1].kind == "job" and events[-1].data["id"] == job.id


def test_a_closed_buffer_ends_its_readers_without_a_record():
    output = LiveOutput(limit=100)
    output.close()
    assert [event.kind for event in events_of(output)] == ["status"]


@pytest.mark.parametrize("text", ["", "1", "1-", "-1", "a-b", "1-2-3", "1" * 16 + "-0"])
def test_positions_that_are_not_event_ids_are_refused(text):
    with pytest.raises(BadPosition):
        Position.parse(text)


def test_event_streams_are_bounded_by_a_quarter_of_the_http_threads_unless_set(tmp_path):
    assert Settings(data_dir=tmp_path, http_threads=32).event_stream_limit == 8
    assert Settings(data_dir=tmp_path, http_threads=2).event_stream_limit == 1
    assert Settings(data_dir=tmp_path, http_threads=32, max_event_streams=3).event_stream_limit == 3
