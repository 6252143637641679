"""A job's output as it arrives, for readers who follow it live.

The runner publishes each chunk into the job's `LiveOutput`, a bounded buffer of the newest bytes of each stream;
publishing never waits for a reader. Every reader follows the buffer at its own position, a byte offset in each
stream, so a slow reader costs nothing but the chunks the buffer keeps anyway: when it falls behind further than
the buffer reaches, it is told how many bytes it missed. A finished job's events come from its record.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from server_responder.jobs.record import QUEUED, Job

STREAMS = ("stdout", "stderr")
# The most chunks a reader takes from the buffer in one go, so one round never copies much of it.
_CHUNKS_PER_READ = 64
# A finished job's kept output is sent in events of at most this many bytes.
_REPLAY_CHUNK_BYTES = 64 * 1024
_POSITION = re.compile(r"([0-9]{1,15})-([0-9]{1,15})")


class BadPosition(ValueError):
    """An event id that is not one this service gives."""


@dataclass(frozen=True)
class Position:
    """How many bytes of each stream a reader has seen; an event's id is the position after it."""

    stdout: int = 0
    stderr: int = 0

    @classmethod
    def parse(cls, text: str) -> Position:
        match = _POSITION.fullmatch(text.strip())
        if match is None:
            raise BadPosition("must be an event id of this stream: <stdout bytes>-<stderr bytes>")
        return cls(int(match.group(1)), int(match.group(2)))

    def of(self, stream: str) -> int:
        return self.stdout if stream == "stdout" else self.stderr

    def moved(self, stream: str, to: int) -> Position:
        return Position(to, self.stderr) if stream == "stdout" else Position(self.stdout, to)

    def event_id(self) -> str:
        return f"{self.stdout}-{self.stderr}"


@dataclass(frozen=True)
class OutputEvent:
    """One event of a job's stream: `status`, `stdout`, `stderr`, `dropped`, `job` (the last) or `keepalive`."""

    kind: str
    data: dict[str, Any]
    id: str | None = None


@dataclass(frozen=True)
class _Chunk:
    sequence: int
    stream: str
    start: int  # the offset of its first byte in its stream
    data: bytes

    @property
    def end(self) -> int:
        return self.start + len(self.data)


class LiveOutput:
    """The newest output of one queued or running job, at most `limit` bytes of each stream, and its status."""

    def __init__(self, limit: int, status: str = QUEUED) -> None:
        self.limit = limit
        self._changed = threading.Condition(threading.Lock())
        self._chunks: deque[_Chunk] = deque()
        self._kept = dict.fromkeys(STREAMS, 0)
        self._written = dict.fromkeys(STREAMS, 0)
        # The start of a character split between two reads, held back so every chunk is whole text.
        self._partial = dict.fromkeys(STREAMS, b"")
        self._sequence = 0
        self._status = status
        self._final: Job | None = None
        self._closed = False

    def publish(self, stream: str, data: bytes) -> None:
        """Add what the job wrote; never blocks on readers."""
        with self._changed:
            data = self._partial[stream] + data
            cut = _whole_characters(data)
            self._partial[stream] = data[cut:]
            self._add(stream, data[:cut])

    def set_status(self, status: str) -> None:
        with self._changed:
            self._status = status
            self._changed.notify_all()

    def end(self, job: Job) -> None:
        """The job is final: readers get what is left, then its record."""
        with self._changed:
            for stream in STREAMS:
                self._add(stream, self._partial[stream])
                self._partial[stream] = b""
            self._status = job.status
            self._final = job
            self._changed.notify_all()

    def close(self) -> None:
        """The service stops with the job unfinished: readers stop following (and may come back later)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def _add(self, stream: str, data: bytes) -> None:
        if not data:
            return
        self._chunks.append(_Chunk(self._sequence, stream, self._written[stream], data))
        self._sequence += 1
        self._written[stream] += len(data)
        self._kept[stream] += len(data)
        while self._kept[stream] > self.limit:
            self._drop_oldest(stream)
        self._changed.notify_all()

    def _drop_oldest(self, stream: str) -> None:
        # The other stream's chunks before it stay: each stream keeps its own newest `limit` bytes.
        for index, chunk in enumerate(self._chunks):
            if chunk.stream == stream:
                del self._chunks[index]
                self._kept[stream] -= len(chunk.data)
                return

    def _read(self, after: int, status_seen: str | None,
              timeout: float) -> tuple[list[_Chunk], str, Job | None, bool]:
        """The chunks after sequence `after` (waiting up to `timeout` for news), the status, the final record and
        whether the buffer was closed."""
        with self._changed:
            self._changed.wait_for(lambda: self._has_news(after, status_seen), timeout)
            first = self._chunks[0].sequence if self._chunks else self._sequence
            skip = max(0, after + 1 - first)
            chunks = list(itertools.islice(self._chunks, skip, skip + _CHUNKS_PER_READ))
            final = self._final if skip + len(chunks) >= len(self._chunks) else None
            return chunks, self._status, final, self._closed

    def _has_news(self, after: int, status_seen: str | None) -> bool:
        return (self._sequence > after + 1 or self._status != status_seen or self._final is not None
                or self._closed)

    def follow(self, position: Position, keepalive_seconds: float) -> Iterator[OutputEvent]:
        """Every event from `position` on until the job is final; a keepalive after each quiet interval."""
        sequence = -1
        status_sent: str | None = None
        while True:
            chunks, status, final, closed = self._read(sequence, status_sent, keepalive_seconds)
            quiet = not chunks and status == status_sent
            if status != status_sent and final is None:
                yield OutputEvent("status", {"status": status})
                status_sent = status
            for chunk in chunks:
                sequence = chunk.sequence
                seen = position.of(chunk.stream)
                if chunk.end <= seen:
                    continue
                if chunk.start > seen:
                    position = position.moved(chunk.stream, chunk.start)
                    yield _dropped(chunk.stream, chunk.start - seen, position)
                position = position.moved(chunk.stream, chunk.end)
                yield _output(chunk.stream, chunk.data[seen - chunk.start if seen > chunk.start else 0:], position)
            if final is not None:
                yield from _final_events(final, status_sent)
                return
            if closed and not chunks:
                return
            if quiet:
                yield OutputEvent("keepalive", {})


def finished_events(job: Job, position: Position) -> Iterator[OutputEvent]:
    """A finished job's events: the output its record keeps from `position` on, one stream after the other, and
    the record itself."""
    for stream in STREAMS:
        kept = getattr(job, stream).encode()
        offset = position.of(stream)
        while offset < len(kept):
            part = kept[offset:offset + _REPLAY_CHUNK_BYTES]
            cut = _whole_characters(part) if offset + len(part) < len(kept) else len(part)
            offset += cut or len(part)
            position = position.moved(stream, offset)
            yield _output(stream, part[:cut or len(part)], position)
    yield from _final_events(job, None)


def _final_events(job: Job, status_sent: str | None) -> Iterator[OutputEvent]:
    if job.status != status_sent:
        yield OutputEvent("status", {"status": job.status})
    yield OutputEvent("job", job.resource())


def _output(stream: str, data: bytes, position: Position) -> OutputEvent:
    return OutputEvent(stream, {"text": data.decode("utf-8", errors="replace")}, position.event_id())


def _dropped(stream: str, count: int, position: Position) -> OutputEvent:
    return OutputEvent("dropped", {"stream": stream, "bytes": count}, position.event_id())


def _whole_characters(data: bytes) -> int:
    """How many leading bytes of `data` end on a character boundary of UTF-8 (all of it, unless its last
    character is incomplete)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return len(data)
        if byte >= 0xC0:  # a lead byte: is its character complete?
            needed = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) if back >= needed else len(data) - back
    return len(data)
