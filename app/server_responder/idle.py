"""When the box last worked: persisted, so a restart does not make a busy box look idle."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from server_responder.store import write_atomically


def iso_utc(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, timezone.utc)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


class IdleClock:
    """Records when jobs last started and finished, in `<data_dir>/last_job.json`."""

    def __init__(self, path: Path, now: Callable[[], float] = time.time) -> None:
        self.path = path
        self.now = now
        self.booted_at = now()
        self._lock = threading.Lock()
        self._record = self._load()

    def _load(self) -> dict[str, float | None]:
        try:
            raw = json.loads(self.path.read_text())
            return {"last_started": raw.get("last_started"), "last_finished": raw.get("last_finished")}
        except (OSError, ValueError, AttributeError):
            return {"last_started": None, "last_finished": None}

    def _touch(self, key: str) -> None:
        with self._lock:
            self._record[key] = self.now()
            write_atomically(self.path, json.dumps(self._record).encode(), mode=0o644)

    def job_started(self) -> None:
        self._touch("last_started")

    def job_finished(self) -> None:
        self._touch("last_finished")

    @property
    def last_activity(self) -> float | None:
        moments = [t for t in self._record.values() if t is not None]
        return max(moments) if moments else None

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            record = dict(self._record)
        return {
            "last_time": iso_utc(self.last_activity),
            "last_started": iso_utc(record["last_started"]),
            "last_finished": iso_utc(record["last_finished"]),
            "booted_at": iso_utc(self.booted_at),
        }
