"""The job journal: every accepted job's records, appended to segment files, with an index in memory.

Each change of a job appends its whole record as one line, `<kind> <time> <id> <json>`, kind `Q`ueued,
`R`unning or `F`inished, or a removal `X <time> <id>`. The index maps each id to its latest line, so reading a
job is one `pread` whatever the number kept. A durable append returns once the line is on disk: appends
wait for one `fdatasync` together (group commit). A segment whose lines are all superseded or removed is
deleted (renamed out of the journal, then cut back a step at a time while reads and appends go on); the few
still current in an old one are appended again first, so the journal stays about the size of what it keeps.
Each start opens a new segment: a line torn by a crash is never followed by another.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from server_responder.files import write_all
from server_responder.jobs.record import Job

SEGMENT_BYTES = 8 * 1024 * 1024
# An old segment with at most this many current lines has them appended again, then goes.
REWRITE_MAX_LINES = 64
# A deleted segment is cut back by this much at a time, each step a short hold of the service's CPU.
_DISCARD_STEP = 512 * 1024
_SEGMENT = re.compile(r"journal\.(\d{6,})")
_FINISHED, _REMOVED = b"F", b"X"
_KINDS = {"queued": b"Q", "running": b"R"}


def _segment_name(number: int) -> str:
    return f"journal.{number:06d}"


def _released_name(number: int) -> str:
    return f"released.{number:06d}"


def _delete_gradually(path: Path) -> None:
    """Cut the file back a step at a time, then unlink what is left of it."""
    try:
        writer = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        size = os.fstat(writer).st_size
        while size > 0:
            size = max(size - _DISCARD_STEP, 0)
            os.ftruncate(writer, size)
    finally:
        os.close(writer)
    path.unlink(missing_ok=True)


class _Segment:
    def __init__(self, number: int, path: Path, descriptor: int, size: int) -> None:
        self.number = number
        self.path = path
        self.descriptor = descriptor
        self.size = size
        self.current: set[str] = set()  # ids whose latest line is in this segment


class JobJournal:
    def __init__(self, directory: Path, now: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.now = now
        self._lock = threading.Lock()
        self._segments: OrderedDict[int, _Segment] = OrderedDict()
        self._active: _Segment | None = None
        # id -> where its latest line is (segment number, offset, length, packed in one int: the index of
        # 100,000 records is 8 MiB smaller than with tuples)
        self._where: dict[str, int] = {}
        # finished ids in the order they finished, with when: retention removes from the front
        self._finished: OrderedDict[str, float] = OrderedDict()
        self._synced: tuple[int, int] = (0, 0)
        self._syncing = False
        self._sync_done = threading.Condition()
        self._releasing = threading.Lock()

    # ---- start ---------------------------------------------------------------------------------------------------

    def open(self) -> list[Job]:
        """Read what earlier runs left, start a new segment, and return the unfinished jobs, oldest first.

        Opened again (a service stopped and started in one process), it reads everything afresh."""
        self.close()
        for leftover in self.directory.glob("released.*"):
            leftover.unlink(missing_ok=True)  # a deletion a crash cut short
        for number, path in self._existing_segments():
            descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            segment = _Segment(number, path, descriptor, os.fstat(descriptor).st_size)
            self._segments[number] = segment
            for offset, length, kind, moment, job_id in _lines(path):
                self._forget(job_id)
                if kind == _REMOVED:
                    continue
                self._where[job_id] = _location(number, offset, length)
                segment.current.add(job_id)
                if kind == _FINISHED:
                    self._finished[job_id] = moment
        # Lines moved forward out of order keep their time: finishing order is by time.
        self._finished = OrderedDict(sorted(self._finished.items(), key=lambda item: item[1]))
        self._start_segment()
        self._import_job_files()
        jobs = [self.load(job_id) for job_id in self._where if job_id not in self._finished]
        return sorted((job for job in jobs if job is not None), key=lambda job: job.created_at)

    def _existing_segments(self) -> list[tuple[int, Path]]:
        found = []
        for path in self.directory.iterdir():
            matched = _SEGMENT.fullmatch(path.name)
            if matched:
                found.append((int(matched.group(1)), path))
        return sorted(found)

    def _start_segment(self) -> None:
        number = max(self._segments, default=0) + 1
        path = self.directory / _segment_name(number)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        # Kept open only to read and sync; each append opens it for writing, so no descriptor stays open for
        # writing between appends (a read-only remount of the data dir's disk would be refused).
        descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        _sync_directory(self.directory)
        if self._active is not None:
            os.fdatasync(self._active.descriptor)
        segment = _Segment(number, path, descriptor, 0)
        self._segments[number] = segment
        self._active = segment
        with self._sync_done:
            self._synced = (number, 0)

    def _import_job_files(self) -> None:
        """Records kept one file per job by earlier versions move into the journal, then their files go."""
        files = sorted(self.directory.glob("*.json"), key=lambda path: _mtime(path))
        if not files:
            return
        imported = []
        for path in files:
            try:
                job = Job.from_json(path.read_bytes())
            except (OSError, ValueError, TypeError):
                continue
            self.save(job)
            imported.append(path)
        self.sync()
        for path in imported:
            path.unlink(missing_ok=True)

    # ---- writing -------------------------------------------------------------------------------------------------

    def save(self, job: Job, durable: bool = False) -> None:
        """Append the job's record; with `durable`, return once it is on disk."""
        kind = _FINISHED if job.finished else _KINDS.get(job.status, b"R")
        moment = self.now()
        line = b"%s %.3f %s %s\n" % (kind, moment, job.id.encode(), job.to_json())
        with self._lock:
            segment, end = self._append(line)
            self._forget(job.id)
            self._where[job.id] = _location(segment.number, end - len(line), len(line))
            segment.current.add(job.id)
            if kind == _FINISHED:
                self._finished[job.id] = moment
        if durable:
            self._sync_to(segment.number, end)

    def _append(self, data: bytes) -> tuple[_Segment, int]:
        """Write `data` whole at the end of the active segment, or not at all: the segment and its new end."""
        segment = self._active
        assert segment is not None, "open() first"
        if segment.size >= SEGMENT_BYTES:
            self._start_segment()
            segment = self._active
        writer = os.open(segment.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        try:
            write_all(writer, data)
        except OSError:
            # A part of a line (a full disk, say) would spoil the next one: the segment is cut back to its end.
            try:
                os.ftruncate(writer, segment.size)
            except OSError:
                segment.size = SEGMENT_BYTES  # the next append starts a new segment
            raise
        finally:
            os.close(writer)
        segment.size += len(data)
        return segment, segment.size

    def _forget(self, job_id: str) -> None:
        """The job's earlier line stops being current (caller holds the lock, or is still opening)."""
        where = self._where.pop(job_id, None)
        if where is not None:
            self._segments[_unpacked(where)[0]].current.discard(job_id)
        self._finished.pop(job_id, None)

    def sync(self) -> None:
        with self._lock:
            segment = self._active
            assert segment is not None
            number, end = segment.number, segment.size
        self._sync_to(number, end)

    def _sync_to(self, number: int, end: int) -> None:
        """Group commit: one thread's fdatasync covers every line appended before it began."""
        with self._sync_done:
            while self._synced < (number, end):
                if not self._syncing:
                    break
                self._sync_done.wait()
            else:
                return
            self._syncing = True
        synced = None
        try:
            with self._lock:
                segment = self._active
                target = (segment.number, segment.size)
            os.fdatasync(segment.descriptor)
            synced = target
        finally:
            with self._sync_done:
                self._syncing = False
                if synced is not None and synced > self._synced:
                    self._synced = synced
                self._sync_done.notify_all()

    def remove(self, job_id: str) -> None:
        self._remove([job_id])

    def _remove(self, job_ids: Iterable[str]) -> None:
        moment = self.now()
        with self._lock:
            ids = [job_id for job_id in job_ids if job_id in self._where]
            for job_id in ids:
                self._forget(job_id)
            if ids:
                lines = b"".join(b"X %.3f %s\n" % (moment, job_id.encode()) for job_id in ids)
                try:
                    self._append(lines)
                except OSError:
                    # A read-only data dir keeps the lines; the index forgets them to stay bounded.
                    pass

    # ---- reading -------------------------------------------------------------------------------------------------

    def load(self, job_id: str) -> Job | None:
        with self._lock:
            where = self._where.get(job_id)
            if where is None:
                return None
            number, offset, length = _unpacked(where)
            descriptor = self._segments[number].descriptor
            try:
                line = os.pread(descriptor, length, offset)
            except OSError:
                return None
        try:
            return Job.from_json(line.split(b" ", 3)[3])
        except (IndexError, ValueError, TypeError):
            return None

    def count(self) -> int:
        with self._lock:
            return len(self._where)

    def recently_finished(self, limit: int) -> list[str]:
        """Ids of the last `limit` jobs to finish, newest first."""
        with self._lock:
            return list(itertools.islice(reversed(self._finished), limit))

    # ---- retention -----------------------------------------------------------------------------------------------

    def prune(self, keep: int, keep_seconds: float) -> int:
        """Remove the oldest finished records while more than `keep` are kept and the oldest finished more
        than `keep_seconds` ago, then let go of segments nothing current is in; the number removed."""
        cutoff = self.now() - keep_seconds
        removed = []
        with self._lock:
            surplus = len(self._finished) - keep
            for job_id, finished in self._finished.items():
                if len(removed) >= surplus or finished > cutoff:
                    break
                removed.append(job_id)
        if removed:
            self._remove(removed)
        self._release_segments()
        return len(removed)

    def _release_segments(self) -> None:
        """Delete the oldest segments whose lines are all superseded, moving a few current ones forward.

        One thread at a time, oldest first: a segment is off the disk before a newer one goes, so a crash never
        leaves an old line whose removal was in a newer segment already deleted."""
        if not self._releasing.acquire(blocking=False):
            return  # another thread is releasing; it goes on to whatever else can go
        try:
            while True:
                with self._lock:
                    oldest = next(iter(self._segments.values()))
                    if oldest is self._active or len(oldest.current) > REWRITE_MAX_LINES:
                        return
                    if oldest.current:
                        self._move_forward(oldest)
                # Lines that superseded the segment's own must be on disk before it goes.
                self.sync()
                with self._lock:
                    if oldest.current:
                        return
                    del self._segments[oldest.number]
                self._discard(oldest)
        finally:
            self._releasing.release()

    def _discard(self, segment: _Segment) -> None:
        """Delete a segment nothing reads any more, outside the lock and a step at a time: an 8 MiB segment
        unlinked at once held every read and append of the journal for 4-12 ms while its blocks were freed."""
        try:
            # Renamed first, so that a crash while it is cut back leaves a file no start reads: the segment's
            # own tail removes some of its earlier lines, and cutting from the end would bring those back.
            released = segment.path.with_name(_released_name(segment.number))
            try:
                os.rename(segment.path, released)
            except FileNotFoundError:
                return
            _delete_gradually(released)
        finally:
            with self._sync_done:
                # A sync begun while this was the active segment may still be at its descriptor.
                self._sync_done.wait_for(lambda: not self._syncing)
                os.close(segment.descriptor)

    def _move_forward(self, segment: _Segment) -> None:
        """Append the segment's current lines again, in one write (caller holds the lock)."""
        moved = []
        for job_id in segment.current:
            _, offset, length = _unpacked(self._where[job_id])
            moved.append((job_id, os.pread(segment.descriptor, length, offset)))
        target, end = self._append(b"".join(line for _, line in moved))
        offset = end - sum(len(line) for _, line in moved)
        for job_id, line in moved:
            self._where[job_id] = _location(target.number, offset, len(line))
            target.current.add(job_id)
            offset += len(line)
        segment.current.clear()

    def close(self) -> None:
        with self._lock:
            for segment in self._segments.values():
                os.close(segment.descriptor)
            self._segments.clear()
            self._active = None
            self._where.clear()
            self._finished.clear()


def _location(number: int, offset: int, length: int) -> int:
    return (number << 80) | (offset << 40) | length


def _unpacked(location: int) -> tuple[int, int, int]:
    return location >> 80, (location >> 40) & _FORTY_BITS, location & _FORTY_BITS


_FORTY_BITS = (1 << 40) - 1


def _lines(path: Path) -> Iterator[tuple[int, int, bytes, float, str]]:
    """(offset, length, kind, time, id) of each whole, well-formed line; a torn or spoiled one is skipped."""
    offset = 0
    with open(path, "rb") as handle:
        for line in handle:
            length = len(line)
            start = offset
            offset += length
            if not line.endswith(b"\n"):
                return
            parts = line.split(b" ", 3)
            if len(parts) < 3 or parts[0] not in (b"Q", b"R", b"F", b"X"):
                continue
            try:
                moment = float(parts[1])
                job_id = parts[2].strip().decode("ascii")
            except (ValueError, UnicodeDecodeError):
                continue
            if parts[0] != _REMOVED and len(parts) < 4:
                continue
            yield start, length, parts[0], moment, job_id


def _sync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
