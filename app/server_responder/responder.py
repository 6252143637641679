"""The responder's plain-Python parts wired together once, for the web layer and the CLI alike."""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, replace

from server_responder.files import write_atomically
from server_responder.fleet.member import FleetMember
from server_responder.jobs.callbacks import CompletionCallbacks
from server_responder.jobs.containment import containment_status, detect_containment
from server_responder.jobs.runner import (
    JobUser, blocking_directory, ensure_shared_work_root, job_user_for, shared_work_dir,
)
from server_responder.jobs.script import script_job_type
from server_responder.jobs.service import JobService
from server_responder.jobs.types import JobTypes
from server_responder.lifecycle.drain import DrainSwitch, current_boot_id
from server_responder.lifecycle.idle import IdleClock, IdleStatus
from server_responder.projects.executors import project_job_types
from server_responder.projects.github import PushDeliveries
from server_responder.results.location import open_result_store
from server_responder.results.lookup import ResultLookup
from server_responder.results.store import ResultStore
from server_responder.results.upload_spool import UploadSpool
from server_responder.settings import Settings, SettingsError

log = logging.getLogger("server_responder")


def job_types(settings: Settings) -> JobTypes:
    """Every job type this responder runs: adding one is an entry here and its executor."""
    return JobTypes.of([script_job_type(), *project_job_types(settings)])


def reachable_work_dir(settings: Settings, run_as: JobUser | None) -> Settings:
    """Settings whose work_dir the job user can reach: a job's HOME and TMPDIR are in its workspace."""
    if run_as is None:
        return settings
    blocked = blocking_directory(settings.work_dir, run_as)
    if blocked is None:
        return settings
    if settings.work_dir != settings.data_dir / "work" or os.geteuid() != 0:
        raise SettingsError(f"work_dir: {settings.work_dir} cannot be reached by the job user {run_as.name} "
                            f"({blocked} is closed to it)")
    try:
        ensure_shared_work_root()
    except RuntimeError as error:
        raise SettingsError(f"work_dir: {error}") from None
    moved = replace(settings, work_dir=shared_work_dir(settings.data_dir))
    log.info("workspaces moved where the job user can reach them",
             extra={"event": "jobs.work_dir", "work_dir": str(moved.work_dir), "closed": str(blocked)})
    return moved


@dataclass
class Responder:
    settings: Settings
    store: ResultStore
    clock: IdleClock
    types: JobTypes
    jobs: JobService
    drain: DrainSwitch
    results: ResultLookup
    deliveries: PushDeliveries
    uploads: UploadSpool | None = None
    # The queue and the Auto Scaling group, for a box in a fleet; None for a single box.
    fleet: FleetMember | None = None

    @classmethod
    def create(cls, settings: Settings) -> Responder:
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o711)
        settings = reachable_work_dir(settings, job_user_for(settings.job_user, os.geteuid()))
        store, uploads = open_result_store(settings)
        clock = IdleClock(settings.data_dir / "last_job.json")
        types = job_types(settings)
        jobs = JobService(settings, store, clock, types, uploads=uploads, containment=detect_containment(settings))
        announce_containment(jobs)
        jobs.on_finished(CompletionCallbacks(settings, uploads).job_finished)
        drain = DrainSwitch(settings.data_dir / "drain.json", jobs, current_boot_id())
        deliveries = PushDeliveries(jobs, settings.data_dir / "github_deliveries")
        fleet = FleetMember.for_settings(settings, jobs, types, drain, store, uploads)
        return cls(settings, store, clock, types, jobs, drain, ResultLookup(store, jobs.pending_for), deliveries,
                   uploads, fleet)

    def start(self) -> None:
        self.jobs.start()
        self.drain.restore()

    def counts(self) -> dict[str, int]:
        """Queued and running jobs, and uploads pending or given up when results go to a remote store."""
        uploads = self.uploads.counts() if self.uploads is not None else {}
        return {**self.jobs.counts(), **uploads}

    def idle_status(self) -> IdleStatus:
        return self.clock.status(self.counts(), self.drain.draining)

    def stop(self) -> None:
        self.jobs.stop()
        self.jobs.containment.close()


def announce_containment(jobs: JobService) -> None:
    status = containment_status(jobs.containment, jobs.run_as)
    limits = ", ".join(f"{name} {value}" for name, value in status["limits"].items()) or "none"
    log.info(f"job containment: {status['kind']}; limits: {limits}; jobs run as {status['job_user']}",
             extra={"event": "containment.detected", **status})
    if status["jobs_share_service_user"]:
        log.warning(f"jobs run as the service's own user ({status['job_user']}) and can read everything it can, "
                    "its API token and data dir included: set job_user to keep them apart",
                    extra={"event": "containment.shared_user", "job_user": status["job_user"]})


def ensure_api_key(settings: Settings) -> tuple[Settings, bool]:
    """Use the configured token, else the one stored in the data dir, else make and store one (mode 0600)."""
    if settings.api_key is not None:
        return settings, False
    path = settings.api_token_path
    try:
        stored = path.read_text().strip()
    except FileNotFoundError:
        stored = ""
    if stored:
        return settings.with_api_key(stored), False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o711)
    token = secrets.token_urlsafe(32)
    write_atomically(path, (token + "\n").encode(), mode=0o600)
    os.chmod(path, 0o600)
    return settings.with_api_key(token), True
