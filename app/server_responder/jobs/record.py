"""The job record and its life cycle."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any

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
        shown = {name: value for name, value in vars(self).items() if name != "spec"}
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
        # The fields as they are: the same document as asdict() without its deep copy.
        return json.dumps(vars(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Job:
        raw = json.loads(data)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})
