"""This box's part in a fleet: taking jobs from the queue, and its place in an Auto Scaling group."""

from __future__ import annotations

import logging
import threading

from server_responder.fleet.group import GroupMembership
from server_responder.fleet.queue import QueueConsumer
from server_responder.jobs.service import JobService
from server_responder.jobs.types import JobTypes
from server_responder.lifecycle.drain import DrainSwitch
from server_responder.results.store import ResultStore
from server_responder.results.upload_spool import UploadSpool
from server_responder.settings import Settings

log = logging.getLogger("server_responder.fleet")

# How often the box tells its group whether it works, at most (a change is told at the next look).
PROTECTION_CHECK_SECONDS = 1.0


class FleetMember:
    """The queue consumer (with `queue_url`) and the group membership (with `idle_action = "leave-group"`)."""

    def __init__(self, jobs: JobService, queue: QueueConsumer | None, group: GroupMembership | None) -> None:
        self.jobs = jobs
        self.queue = queue
        self.group = group
        self._stopping = threading.Event()
        self._watch: threading.Thread | None = None

    @classmethod
    def for_settings(cls, settings: Settings, jobs: JobService, types: JobTypes, drain: DrainSwitch,
                     store: ResultStore, uploads: UploadSpool | None) -> FleetMember | None:
        """None for a single box: no queue, and powered off when idle."""
        group = GroupMembership(settings.instance_id) if settings.idle_action == "leave-group" else None
        queue = None
        if settings.queue_url:
            queue = QueueConsumer(settings, jobs, types, drain, store, uploads,
                                  on_accepted=lambda: group.keep_protection(True) if group else None)
        if queue is None and group is None:
            return None
        return cls(jobs, queue, group)

    def start(self) -> None:
        if self.queue is not None:
            self.queue.start()
        if self.group is not None:
            self._stopping.clear()
            self._watch = threading.Thread(target=self._keep_protection, name="fleet-protection", daemon=True)
            self._watch.start()

    def stop(self) -> None:
        if self.queue is not None:
            self.queue.stop()
        self._stopping.set()
        if self._watch is not None:
            self._watch.join(PROTECTION_CHECK_SECONDS * 5)
            self._watch = None

    def busy(self) -> bool:
        counts = self.jobs.counts()
        return counts["queued_jobs"] + counts["running_jobs"] > 0

    def _keep_protection(self) -> None:
        while not self._stopping.wait(PROTECTION_CHECK_SECONDS):
            try:
                self.group.keep_protection(self.busy())
            except Exception:
                log.exception("scale-in protection fault", extra={"event": "fleet.fault"})

    def leave_group(self) -> tuple[bool, str]:
        """The idle box's way out: leave the group, the desired capacity one less, once the queue had nothing
        for it; (done, what happened), as the idle watch's shutdown command reports."""
        if self.group is None:
            return False, "this box is in no Auto Scaling group (idle_action is not leave-group)"
        if self.queue is not None and not self.queue.last_receive_empty:
            return False, "the latest receive from the queue was not empty"
        return self.group.leave()
