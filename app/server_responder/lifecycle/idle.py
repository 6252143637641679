"""When the box last worked: persisted, so a restart does not make a busy box look idle."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from server_responder.files import write_atomically


def iso_utc(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, timezone.utc)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class IdleStatus:
    """What the box says about itself at one moment: the `/last_job` document and the idle watch's input."""

    now: float
    booted_at: float
    last_started: float | None
    last_finished: float | None
    running_jobs: int
    queued_jobs: int
    draining: bool
    # Results spooled but not yet in the store: a stop now would leave them on the box's disk until it boots again.
    pending_uploads: int = 0

    @property
    def busy(self) -> bool:
        return self.running_jobs > 0 or self.queued_jobs > 0

    @property
    def last_activity(self) -> float | None:
        moments = [t for t in (self.last_started, self.last_finished) if t is not None]
        return max(moments) if moments else None

    @property
    def idle_since(self) -> float:
        # Counted from boot at the earliest: a box just started to take work is not idle for the hours it was off.
        return max(self.booted_at, self.last_activity or self.booted_at)

    @property
    def idle_seconds(self) -> float:
        if self.busy:
            return 0.0
        return max(0.0, self.now - self.idle_since)

    @property
    def uptime_seconds(self) -> float:
        return max(0.0, self.now - self.booted_at)

    @property
    def drained(self) -> bool:
        return self.draining and not self.busy

    def document(self) -> dict[str, Any]:
        return {
            "last_time": iso_utc(self.last_activity),
            "last_started": iso_utc(self.last_started),
            "last_finished": iso_utc(self.last_finished),
            "running_jobs": self.running_jobs,
            "queued_jobs": self.queued_jobs,
            "booted_at": iso_utc(self.booted_at),
            "idle_seconds": round(self.idle_seconds, 1),
            "pending_uploads": self.pending_uploads,
            "draining": self.draining,
            "drained": self.drained,
        }


class IdleClock:
    """Records when jobs last started and finished, in `<data_dir>/last_job.json`.

    The file is written at most once every `write_interval` seconds, the latest moments a little later: on
    a busy box that is one write a second instead of two a job, and a restart reads moments a second old
    at worst. `flush` writes what is pending at once.
    """

    def __init__(self, path: Path, now: Callable[[], float] = time.time, write_interval: float = 1.0) -> None:
        self.path = path
        self.now = now
        self.write_interval = write_interval
        self.booted_at = now()
        self._lock = threading.Lock()
        self._record = self._load()
        self._written_at: float | None = None
        self._pending: threading.Timer | None = None

    def _load(self) -> dict[str, float | None]:
        try:
            raw = json.loads(self.path.read_text())
            return {key: _timestamp(raw.get(key)) for key in ("last_started", "last_finished")}
        except (OSError, ValueError, AttributeError):
            return {"last_started": None, "last_finished": None}

    def _touch(self, key: str) -> None:
        with self._lock:
            now = self._record[key] = self.now()
            if self._pending is not None:
                return
            wait = 0.0 if self._written_at is None else self._written_at + self.write_interval - now
            if wait <= 0:
                self._write(now)
                return
            self._pending = threading.Timer(wait, self._write_later)
            self._pending.daemon = True
            self._pending.start()

    def _write(self, at: float) -> None:
        self._written_at = at
        write_atomically(self.path, json.dumps(self._record).encode(), mode=0o644)

    def _write_later(self) -> None:
        with self._lock:
            self._pending = None
            try:
                self._write(self.now())
            except OSError:
                pass  # the next job's moment is written again; the data dir's state is reported by the job service

    def flush(self) -> None:
        with self._lock:
            if self._pending is not None:
                self._pending.cancel()
                self._pending = None
                self._write(self.now())

    def job_started(self) -> None:
        self._touch("last_started")

    def job_finished(self) -> None:
        self._touch("last_finished")

    def status(self, counts: dict[str, int], draining: bool, now: float | None = None) -> IdleStatus:
        """The box's idle state given the job and upload counts and whether it is draining."""
        with self._lock:
            record = dict(self._record)
        return IdleStatus(now=self.now() if now is None else now, booted_at=self.booted_at,
                          last_started=record["last_started"], last_finished=record["last_finished"],
                          running_jobs=counts.get("running_jobs", 0), queued_jobs=counts.get("queued_jobs", 0),
                          draining=draining, pending_uploads=counts.get("pending_uploads", 0))


def _timestamp(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
