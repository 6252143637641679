"""GET /jobs/{id}/events against a real responder: Server-Sent Events read line by line as they arrive."""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A job that prints its lines one at a time, each after the gate file of its number appears.
GATED_SCRIPT = """
import os, sys, time
lines, gates = {lines!r}, {gates!r}
for number, line in enumerate(lines):
    if number:
        while not os.path.exists(gates + str(number)):
            time.sleep(0.01)
    print(line, flush=True)
"""


@dataclass
class Event:
    kind: str
    data: Any
    id: str | None


class EventStream:
    """A Server-Sent Events client over one HTTP connection, reading a line at a time."""

    def __init__(self, url: str, path: str, headers: dict[str, str] | None = None, timeout: float = 30) -> None:
        parts = urllib.parse.urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        self.connection.request("GET", path, headers={"Accept": "text/event-stream", **(headers or {})})
        self.response = self.connection.getresponse()
        self.comments: list[str] = []

    def next(self) -> Event | None:
        """The next event, or None once the stream has closed."""
        fields: dict[str, str] = {}
        while True:
            line = self.response.readline()
            if not line:
                return None
            line = line.decode().rstrip("\n")
            if not line:
                if "event" in fields or "data" in fields:
                    return Event(fields.get("event", "message"), json.loads(fields.get("data", "null")),
                                 fields.get("id"))
                continue
            if line.startswith(":"):
                self.comments.append(line)
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")

    def until(self, wanted) -> list[Event]:
        """Events up to and including the first that `wanted` accepts."""
        seen = []
        while (event := self.next()) is not None:
            seen.append(event)
            if wanted(event):
                return seen
        raise AssertionError(f"the stream closed before the event wanted; it sent {seen}")

    def rest(self) -> list[Event]:
        """Every event until the stream closes."""
        seen = []
        while (event := self.next()) is not None:
            seen.append(event)
        return seen

    def close(self) -> None:
        self.connection.close()


def gated_job(responder, gates: Path, lines: list[str]) -> dict[str, Any]:
    return responder.submit(GATED_SCRIPT.format(lines=lines, gates=str(gates)), wait=0)


def stdout_of(events: list[Event]) -> str:
    return "".join(event.data["text"] for event in events if event.kind == "stdout")


def test_a_reader_sees_the_first_line_while_the_job_runs_then_the_final_record(responder, tmp_path):
    job = gated_job(responder, tmp_path / "gate", ["first", "second"])
    stream = EventStream(responder.url, f"/jobs/{job['id']}/events")
    try:
        assert stream.response.status == 200
        assert stream.response.getheader("Content-Type") == "text/event-stream"
        before = stream.until(lambda event: event.kind == "stdout")
        assert stdout_of(before) == "first\n"
        assert any(event.kind == "status" and event.data["status"] == "running" for event in before)
        # The job is still waiting for its gate: the line came while it ran.
        assert responder.request("GET", f"/jobs/{job['id']}", token=False).json()["status"] == "running"
        (tmp_path / "gate1").touch()
        after = stream.rest()
    finally:
        stream.close()
    assert stdout_of(after) == "second\n"
    assert [event.kind for event in after[-2:]] == ["status", "job"]
    assert after[-2].data == {"status": "succeeded"}
    assert after[-1].data == responder.request("GET", f"/jobs/{job['id']}", token=False).json()


def test_last_event_id_resumes_with_no_loss_and_no_repetition(responder, tmp_path):
    gates = tmp_path / "gate"
    job = gated_job(responder, gates, ["one", "two", "three"])
    first = EventStream(responder.url, f"/jobs/{job['id']}/events")
    seen = first.until(lambda event: event.kind == "stdout")
    first.close()
    resume_at = seen[-1].id
    (gates.parent / "gate1").touch()
    # Resumed while the job runs: what it printed while nobody read comes first, once.
    second = EventStream(responder.url, f"/jobs/{job['id']}/events", headers={"Last-Event-ID": resume_at})
    try:
        middle = second.until(lambda event: event.kind == "stdout")
        (gates.parent / "gate2").touch()
        rest = second.rest()
    finally:
        second.close()
    assert stdout_of(seen) + stdout_of(middle) + stdout_of(rest) == "one\ntwo\nthree\n"
    assert stdout_of(middle) == "two\n"
    assert rest[-1].kind == "job"
    # Resumed once the job is over, from its record, with the id in the query for clients that cannot set headers.
    replay = EventStream(responder.url, f"/jobs/{job['id']}/events?last_event_id={urllib.parse.quote(resume_at)}")
    try:
        assert stdout_of(replay.rest()) == "two\nthree\n"
    finally:
        replay.close()


def test_a_finished_job_answers_its_events_at_once_and_closes(make_responder):
    # The keepalive interval is longer than the read timeout: a stream left open would fail the read.
    responder = make_responder(event_keepalive_seconds=120)
    job = responder.submit("import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(2)")
    assert job["status"] == "failed"
    stream = EventStream(responder.url, f"/jobs/{job['id']}/events", timeout=20)
    try:
        events = stream.rest()
    finally:
        stream.close()
    assert [(event.kind, event.data.get("text")) for event in events[:2]] == [("stdout", "out\n"), ("stderr", "err\n")]
    assert [event.id for event in events[:2]] == ["4-0", "4-4"]
    assert events[-2].data == {"status": "failed"}
    assert events[-1].kind == "job" and events[-1].data["exit_status"] == 2


def test_unknown_job_and_bad_event_id_are_json_errors(responder):
    answer = responder.request("GET", "/jobs/" + "0" * 40 + "/events", token=False)
    assert answer.status == 404
    assert answer.json()["error"] == "not_found"
    job = responder.submit("print(1)")
    answer = responder.request("GET", f"/jobs/{job['id']}/events", token=False, headers={"Last-Event-ID": "x"})
    assert answer.status == 400
    assert answer.json()["field"] == "Last-Event-ID"


def test_a_reader_that_never_reads_holds_no_more_than_the_buffer(make_responder, tmp_path):
    responder = make_responder(output_limit_bytes=1024 * 1024)
    # Once its gate opens, 64 MiB on stdout, a MiB at a time: far more than any buffer may keep.
    script = ("import os, sys, time\n"
              f"while not os.path.exists({str(tmp_path / 'gate')!r}):\n    time.sleep(0.01)\n"
              "block = b'x' * (1 << 20) + b'\\n'\nfor _ in range(64):\n    sys.stdout.buffer.write(block)\n")
    job = responder.submit(script, wait=0)
    address = urllib.parse.urlsplit(responder.url)
    reader = socket.socket()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.settimeout(20)
    reader.connect((address.hostname, address.port))
    try:
        reader.sendall(f"GET /jobs/{job['id']}/events HTTP/1.1\r\nHost: {address.netloc}\r\n\r\n".encode())
        # Peeked, not read: the stream has begun, and from now on nothing is taken from the socket.
        assert reader.recv(64, socket.MSG_PEEK).startswith(b"HTTP/1.1 200")

        def print_everything() -> dict:
            (tmp_path / "gate").touch()
            return responder.wait_for(job["id"], timeout=120)

        growth, finished = responder.peak_memory_growth(print_everything)
    finally:
        reader.close()
    # The job ran to its end while the reader took nothing.
    assert finished["status"] == "succeeded"
    assert finished["truncated"] is True
    # Its capture (3 MiB), the live buffer (1 MiB) and the record; never the 64 MiB the job printed.
    assert growth < 24 * 1024 * 1024, growth


def test_streams_beyond_max_event_streams_are_refused_until_one_closes(make_responder, tmp_path):
    responder = make_responder(max_event_streams=1, event_keepalive_seconds=0.1)
    job = gated_job(responder, tmp_path / "gate", ["a", "b"])
    first = EventStream(responder.url, f"/jobs/{job['id']}/events")
    first.until(lambda event: event.kind == "stdout")
    refused = responder.request("GET", f"/jobs/{job['id']}/events", token=False)
    assert refused.status == 503
    assert refused.json()["error"] == "too_many_streams"
    first.close()
    # The server notices the reader has gone at its next keepalive, and frees the slot.
    deadline = time.monotonic() + 20
    again = EventStream(responder.url, f"/jobs/{job['id']}/events")
    while again.response.status == 503:
        again.close()
        assert time.monotonic() < deadline, "the closed stream's slot was never freed"
        time.sleep(0.1)
        again = EventStream(responder.url, f"/jobs/{job['id']}/events")
    try:
        assert stdout_of(again.until(lambda event: event.kind == "stdout")) == "a\n"
        (tmp_path / "gate1").touch()
        assert again.rest()[-1].kind == "job"
    finally:
        again.close()


def test_head_of_the_events_answers_without_holding_a_stream(make_responder):
    responder = make_responder(max_event_streams=1)
    job = responder.submit("print(1)")
    for _ in range(3):
        answer = responder.request("HEAD", f"/jobs/{job['id']}/events", token=False)
        assert (answer.status, answer.body) == (200, b"")


def test_open_streams_end_when_the_service_stops(make_responder, tmp_path):
    responder = make_responder(workers=1, event_keepalive_seconds=120)
    running = gated_job(responder, tmp_path / "gate", ["working", "never printed"])
    queued = responder.submit("print('never run')", wait=0)
    of_running = EventStream(responder.url, f"/jobs/{running['id']}/events")
    of_queued = EventStream(responder.url, f"/jobs/{queued['id']}/events")
    try:
        of_running.until(lambda event: event.kind == "stdout")
        assert of_queued.next().data == {"status": "queued"}
        # Stopped by SIGTERM, not killed for hanging on the streams' threads.
        assert responder.stop() == 0
        assert [event.kind for event in of_running.rest()] == []
        assert of_queued.rest() == []
    finally:
        of_running.close()
        of_queued.close()
