"""Draining: refuse new jobs while the queued and running ones finish, so the box can be stopped safely.

The drain is persisted with the kernel's boot id: it survives a restart of the service (an operator's drain
is not undone by a package upgrade), but not a reboot — a box stopped and started again was started to work.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from server_responder.files import write_atomically

log = logging.getLogger("server_responder.lifecycle")

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")


def current_boot_id(path: Path = BOOT_ID_PATH) -> str | None:
    """This boot's id on Linux; None elsewhere, where a drain then lasts only as long as the process."""
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


class AcceptsJobs(Protocol):
    def set_accepting(self, accepting: bool) -> None: ...

    def wait_for_no_jobs(self, timeout: float) -> None: ...


class DrainSwitch:
    """Whether the box is draining, kept in `<data_dir>/drain.json` and applied to the job service."""

    def __init__(self, path: Path, jobs: AcceptsJobs, boot_id: str | None,
                 now: Callable[[], float] = time.time) -> None:
        self.path = path
        self.jobs = jobs
        self.boot_id = boot_id
        self.now = now
        self._lock = threading.Lock()
        self.draining = False
        self.reason: str | None = None
        self.since: float | None = None

    def restore(self) -> None:
        """Re-apply a drain recorded earlier in this boot; call after the job service has started."""
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as error:
            log.warning("drain record unreadable, ignored", extra={"event": "drain.unreadable", "error": str(error)})
            return
        if not isinstance(raw, dict) or not raw.get("draining"):
            return
        if self.boot_id is None or raw.get("boot_id") != self.boot_id:
            log.info("drain from an earlier boot dropped",
                     extra={"event": "drain.dropped", "reason": raw.get("reason")})
            self.path.unlink(missing_ok=True)
            return
        with self._lock:
            self.draining = True
            self.reason = str(raw.get("reason") or "unknown")
            self.since = raw.get("since") if isinstance(raw.get("since"), (int, float)) else self.now()
            self.jobs.set_accepting(False)
        log.info("drain restored", extra={"event": "drain.restored", "reason": self.reason})

    def drain(self, reason: str) -> bool:
        """Stop accepting jobs; True when this call started the drain, False when one was already on."""
        with self._lock:
            self.jobs.set_accepting(False)
            if self.draining:
                return False
            self.draining, self.reason, self.since = True, reason, self.now()
            self._save()
        log.info("draining", extra={"event": "drain.started", "reason": reason})
        return True

    def wait_until_drained(self, timeout: float) -> None:
        """Until the queued and running jobs have finished, the drain is lifted, or `timeout` seconds have passed."""
        self.jobs.wait_for_no_jobs(timeout)

    def resume(self) -> bool:
        """Accept jobs again; True when a drain was lifted."""
        with self._lock:
            self.jobs.set_accepting(True)
            if not self.draining:
                return False
            reason = self.reason
            self.draining, self.reason, self.since = False, None, None
            try:
                self.path.unlink(missing_ok=True)
            except OSError as error:
                log.warning("drain record not removed; a restart in this boot drains again", extra={
                    "event": "drain.not_saved", "error": str(error)})
        log.info("drain lifted", extra={"event": "drain.lifted", "reason": reason})
        return True

    def _save(self) -> None:
        record: dict[str, Any] = {"draining": True, "reason": self.reason, "since": self.since,
                                  "boot_id": self.boot_id}
        try:
            write_atomically(self.path, json.dumps(record).encode(), mode=0o644)
        except OSError as error:
            # The drain is in force all the same; only a restart would forget it.
            log.warning("drain not saved; it lasts until the service stops", extra={
                "event": "drain.not_saved", "error": str(error)})
