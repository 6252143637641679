"""The job record, its life cycle, and the spool that keeps every accepted job across restarts."""

from __future__ import annotations

import itertools
import json
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from server_responder.files import write_atomically

QUEUED, RUNNING = "queued", "running"
SUCCEEDED, FAILED, TIMED_OUT, CANCELLED, INTERRUPTED = "succeeded", "failed", "timed_out", "cancelled", "interrupted"
FINISHED = frozenset({SUCCEEDED, FAILED, TIMED_OUT, CANCELLED, INTERRUPTED})


def job_status(*, exit_status: int | None, error: str | None, timed_out: bool, cancelled: bool,
               interrupted: bool = False) -> str:
    """How a finished run ended: the one place a status is derived from what happened."""
    if interrupted:
        return INTERRUPTED
    if cancelled:
        return CANCELLED
    if timed_out:
        return TIMED_OUT
    return SUCCEEDED if exit_status == 0 and error is None else FAILED


def new_job_id() -> str:
    """160 random bits: holding the id is what lets a public page read its own job."""
    return secrets.token_hex(20)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Job:
    id: str
    type: str
    spec: dict[str, Any]
    results_location: str
    status: str = QUEUED
    created_at: str = field(default_factory=utc_now)
    started_at: str | None = None
    finished_at: str | None = None
    duration_s: float | None = None
    exit_status: int | None = None
    signal: str | None = None
    cmd_run: str | None = None
    stdout: str = ""
    stderr: str = ""
    output: str = ""
    truncated: bool = False
    timed_out: bool = False
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    skipped_artifacts: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    # From the job's cgroup, where the kernel reports them.
    oom_killed: bool = False
    peak_memory_bytes: int | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def resource(self) -> dict[str, Any]:
        """The job as the API shows it: everything but the request spec, whose env may hold secrets."""
        shown = asdict(self)
        del shown["spec"]
        shown["language"] = self.spec.get("language")
        return shown

    def result_document(self) -> dict[str, Any]:
        """The stored result, with the original's `results` (combined output) and `cmd_run`."""
        return {
            "job_id": self.id,
            "type": self.type,
            "status": self.status,
            "cmd_run": self.cmd_run,
            "exit_status": self.exit_status,
            "signal": self.signal,
            "results": self.output,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "truncated": self.truncated,
            "timed_out": self.timed_out,
            "error": self.error,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_s": self.duration_s,
            "artifacts": self.artifacts,
            "skipped_artifacts": self.skipped_artifacts,
            "oom_killed": self.oom_killed,
            "peak_memory_bytes": self.peak_memory_bytes,
            **self.details,
        }

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Job:
        raw = json.loads(data)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


class JobSpool:
    """One JSON file per job in the data dir, written before a job is acknowledged.

    Finished records are also kept in an in-memory index, in the order they finished, so retention can
    remove the oldest without listing the directory.
    """

    def __init__(self, directory: Path, now: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.now = now
        self._lock = threading.Lock()
        self._finished: OrderedDict[str, float] | None = None

    def _path(self, job_id: str) -> Path:
        return self.directory / f"{job_id}.json"

    def save(self, job: Job, durable: bool = False) -> None:
        with self._lock:
            write_atomically(self._path(job.id), job.to_json(), mode=0o600, durable=durable)
            if job.finished and self._finished is not None:
                self._finished[job.id] = self.now()
                self._finished.move_to_end(job.id)

    def load(self, job_id: str) -> Job | None:
        try:
            return Job.from_json(self._path(job_id).read_bytes())
        except (OSError, ValueError, TypeError):
            return None

    def remove(self, job_id: str) -> None:
        with self._lock:
            self._path(job_id).unlink(missing_ok=True)
            if self._finished is not None:
                self._finished.pop(job_id, None)

    def load_all(self) -> list[Job]:
        jobs = []
        for path in self.directory.glob("*.json"):
            try:
                jobs.append(Job.from_json(path.read_bytes()))
            except (OSError, ValueError, TypeError):
                continue
        return sorted(jobs, key=lambda job: job.created_at)

    def count(self) -> int:
        return sum(1 for _ in self.directory.glob("*.json"))

    def index_finished(self, unfinished: Iterable[str]) -> None:
        """Index the records on disk, once, at start, by their last write (when they finished); the ids in
        `unfinished` (queued again after a restart) are left out: only finished records are ever pruned."""
        skipped = set(unfinished)
        found = []
        for path in self.directory.glob("*.json"):
            if path.stem not in skipped:
                try:
                    found.append((path.stat().st_mtime, path.stem))
                except OSError:
                    continue
        with self._lock:
            self._finished = OrderedDict((job_id, moment) for moment, job_id in sorted(found))

    def recently_finished(self, limit: int) -> list[str]:
        """Ids of the last `limit` jobs to finish, newest first."""
        with self._lock:
            finished = self._finished or OrderedDict()
            return list(itertools.islice(reversed(finished), limit))

    def prune(self, keep: int, keep_seconds: float) -> int:
        """Remove the oldest finished records while more than `keep` are kept and the oldest finished
        more than `keep_seconds` ago; the number removed. Costs one step per record removed."""
        removed = 0
        cutoff = self.now() - keep_seconds
        with self._lock:
            if self._finished is None:
                return 0
            while len(self._finished) > keep:
                job_id, finished = next(iter(self._finished.items()))
                if finished > cutoff:
                    break
                del self._finished[job_id]
                try:
                    self._path(job_id).unlink(missing_ok=True)
                except OSError:
                    # A read-only data dir keeps its records; the index forgets them to stay bounded.
                    pass
                removed += 1
        return removed
