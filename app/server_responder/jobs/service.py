"""The job service: accepts jobs, keeps them in the journal, runs them on a bounded pool of workers."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from server_responder.degraded import Degradations, is_storage_fault, write_fault
from server_responder.jobs.containment import Containment, JobCell, JobStats, detect_containment
from server_responder.jobs.executor import JobContext, JobOutcome
from server_responder.jobs.journal import JobJournal
from server_responder.jobs.output import LiveOutput, OutputEvent, Position, finished_events
from server_responder.jobs.record import (
    CANCELLED, FAILED, INTERRUPTED, RUNNING, SUCCEEDED, Job, job_status, new_job_id, utc_now,
)
from server_responder.jobs.runner import job_user_for
from server_responder.jobs.tally import JobTally
from server_responder.jobs.types import JobTypes
from server_responder.jobs.workspaces import Workspaces
from server_responder.lifecycle.idle import IdleClock
from server_responder.results.keys import default_location
from server_responder.results.store import ResultStore, put_json
from server_responder.results.upload_spool import UploadSpool, UploadUrlStore, upload_targets
from server_responder.settings import Settings

log = logging.getLogger("server_responder.jobs")

# Finished records the journal could not take stay readable from memory, the newest this many.
UNSAVED_KEPT = 500
# The last jobs to finish, kept in memory too: a waiting caller's answer needs no read.
RECENT_KEPT = 64
_JOB_ID = re.compile(r"[0-9a-f]{40}")


class QueueFull(RuntimeError):
    """Every queue slot is taken; the caller should retry later."""


class NotAccepting(RuntimeError):
    """The service is draining or stopping and takes no new jobs."""


class JobNotFound(KeyError):
    pass


class JobExists(RuntimeError):
    """A job of this id is queued or running already; it is not started a second time."""


class DataDirUnwritable(RuntimeError):
    """The job could not be journalled, so it was not accepted; the message names the cause."""


class JobService:
    def __init__(self, settings: Settings, store: ResultStore, clock: IdleClock,
                 types: JobTypes, uploads: UploadSpool | None = None,
                 containment: Containment | None = None) -> None:
        self.settings = settings
        self.store = store
        self.uploads = uploads or UploadSpool(settings.data_dir / "uploads", None,
                                              retry_seconds=settings.upload_retry_seconds,
                                              retry_max_seconds=settings.upload_retry_max_seconds)
        self.clock = clock
        self.types = types
        self.journal = JobJournal(settings.data_dir / "jobs")
        # Never root: a root service with no job_user runs jobs as an unprivileged user.
        self.run_as = job_user_for(settings.job_user, os.geteuid())
        self.containment = containment or detect_containment(settings)
        self.workspaces = Workspaces(settings.work_dir, self.run_as, kept_max=settings.workers)
        self._queue: deque[Job] = deque()
        self._active: dict[str, Job] = {}
        self._cancels: dict[str, threading.Event] = {}
        self._pending_keys: dict[str, tuple[str, ...]] = {}
        # Ended when the job is final: what a waiting caller waits on, instead of every release.
        self._done: dict[str, threading.Event] = {}
        # What a queued or running job has written so far, for readers who follow it live.
        self._live: dict[str, LiveOutput] = {}
        self.tally = JobTally()
        lock = threading.RLock()
        self._condition = threading.Condition(lock)
        # Workers wait for work on their own condition (same lock), so a release wakes none of them.
        self._work_ready = threading.Condition(lock)
        self._accepting_now = 0
        # Ids given by the caller that are being accepted now: two submits of one id never both get in.
        self._claimed: set[str] = set()
        self._workers: list[threading.Thread] = []
        self._accepting = False
        self._stopping = False
        self._finished_listeners: list[Callable[[Job], None]] = []
        self._unsaved: OrderedDict[str, Job] = OrderedDict()
        self._recent: OrderedDict[str, Job] = OrderedDict()
        self.degradations = Degradations(settings.data_dir)

    def start(self) -> None:
        self.containment.start()
        self.settings.work_dir.mkdir(parents=True, exist_ok=True, mode=0o711)
        self._recover()
        self._prune_journal()
        self._stopping = False
        self._accepting = True
        self._workers = [
            threading.Thread(target=self._work, name=f"job-worker-{n}", daemon=True)
            for n in range(self.settings.workers)
        ]
        for worker in self._workers:
            worker.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop taking jobs, interrupt running ones (queued ones stay in the journal) and wait for the workers."""
        with self._condition:
            self._accepting = False
            self._stopping = True
            for event in self._cancels.values():
                event.set()
            # Queued jobs stay queued for the next start; running ones end and tell their readers so.
            for job in self._queue:
                live = self._live.get(job.id)
                if live is not None:
                    live.close()
            self._condition.notify_all()
            self._work_ready.notify_all()
        wait = timeout if timeout is not None else self.settings.kill_grace_seconds + 5
        for worker in self._workers:
            worker.join(wait)
        self._workers = []
        self.workspaces.close()
        self.containment.stop()
        self._quietly(self.clock.flush, "data_dir")

    def on_finished(self, listener: Callable[[Job], None]) -> None:
        self._finished_listeners.append(listener)

    def set_accepting(self, accepting: bool) -> None:
        with self._condition:
            self._accepting = accepting and not self._stopping
            self._condition.notify_all()

    def wait_for_no_jobs(self, timeout: float) -> None:
        """Until nothing is queued or running, jobs are accepted again, or `timeout` seconds have passed."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while self._active and not self._accepting:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._condition.wait(remaining)

    @property
    def accepting(self) -> bool:
        return self._accepting

    def _recover(self) -> None:
        # Before anything runs: whatever the previous instance's jobs left running is ended first.
        leftovers = self.containment.recover()
        if leftovers:
            log.warning("processes of a previous instance's jobs ended",
                        extra={"event": "job.leftovers_killed", "job_ids": leftovers})
        for job in self.journal.open():
            if job.status == RUNNING:
                job.status = INTERRUPTED
                job.error = "the service stopped while this job was running"
                job.finished_at = utc_now()
                job = self._publish(job)
                self.journal.save(job, durable=True)
                log.warning("job interrupted", extra={"event": "job.interrupted", "job_id": job.id, "type": job.type})
            else:
                self._queue.append(job)
                self._active[job.id] = job
                self._done[job.id] = threading.Event()
                self._live[job.id] = LiveOutput(self.settings.output_limit_bytes)
                log.info("job recovered", extra={"event": "job.recovered", "job_id": job.id, "type": job.type})
        self.workspaces.recover({job.id for job in self._queue})

    def submit(self, job_type: str, spec: dict[str, Any], results_location: str | None = None,
               request_id: str | None = None, *, job_id: str | None = None,
               details: dict[str, Any] | None = None, durable: bool = True) -> Job:
        """Accept a job; `job_id` names it when the caller already knows its id (a finished job of that id is
        run again, a queued or running one raises JobExists), `details` start its result document's extras.
        With `durable` false its accepted record is written but not synced: for a caller told nothing yet."""
        if self.types.executor(job_type) is None:
            raise ValueError(f"no executor for job type {job_type!r}")
        if job_id is not None and not _JOB_ID.fullmatch(job_id):
            raise ValueError("a job id is 40 lowercase hex digits")
        job_id = job_id or new_job_id()
        job = Job(id=job_id, type=job_type, spec=spec, results_location=results_location or default_location(job_id),
                  request_id=request_id, details=dict(details or {}))
        with self._condition:
            if not self._accepting:
                raise NotAccepting("the responder is not accepting jobs")
            if len(self._queue) + self._accepting_now >= self.settings.queue_size:
                raise QueueFull(f"the queue is full ({self.settings.queue_size} jobs waiting)")
            if job_id in self._active or job_id in self._claimed:
                raise JobExists(f"job {job_id} is already queued or running")
            self._claimed.add(job_id)
            self._accepting_now += 1
        try:
            try:
                # In the journal, on disk, before it is acknowledged: an accepted job survives a crash. The disk
                # write is outside the service's lock, so jobs accepted at once share one.
                self.journal.save(job, durable=durable)
            except OSError as error:
                self._quietly(lambda: self.journal.remove(job.id), None)
                raise DataDirUnwritable(self._write_failed(error, "data_dir")) from None
            self.degradations.recovered("data_dir")
            self.tally.accepted(job.type)
            # Logged before a worker is woken, which would otherwise run beside this thread's logging.
            log.info("job accepted", extra={"event": "job.accepted", "job_id": job.id, "type": job.type,
                                            "request_id": request_id, "results_location": job.results_location})
            with self._condition:
                self._queue.append(job)
                self._active[job.id] = job
                self._done[job.id] = threading.Event()
                self._live[job.id] = LiveOutput(self.settings.output_limit_bytes)
                self._work_ready.notify()
        finally:
            with self._condition:
                self._accepting_now -= 1
                self._claimed.discard(job_id)
        return job

    def submit_and_wait(self, job_type: str, spec: dict[str, Any], results_location: str | None, request_id: str | None,
                        wait: float) -> Job:
        """Accept a job whose caller waits up to `wait` seconds for it: the answer is its acknowledgement. So its
        accepted record is synced with its final one (one sync, not two), or, when it is not final by then,
        before this returns. A sync that fails then raises DataDirUnwritable, though the job runs on."""
        job = self.submit(job_type, spec, results_location, request_id, durable=False)
        answered = self.wait(job.id, wait) or job
        if not answered.finished:
            try:
                self.journal.sync()
            except OSError as error:
                raise DataDirUnwritable(self._write_failed(error, "data_dir")) from None
        return answered

    def get(self, job_id: str) -> Job | None:
        with self._condition:
            job = self._active.get(job_id) or self._recent.get(job_id) or self._unsaved.get(job_id)
        if job is not None:
            return job
        return self.journal.load(job_id)

    def recent(self, limit: int = 50) -> list[Job]:
        """Queued and running jobs, newest first, then the last ones to finish."""
        with self._condition:
            jobs = sorted(self._active.values(), key=lambda job: job.created_at, reverse=True)
            jobs.extend(reversed(self._unsaved.values()))
        shown = {job.id for job in jobs}
        for job_id in self.journal.recently_finished(limit):
            if len(jobs) >= limit:
                break
            job = self.get(job_id) if job_id not in shown else None
            if job is not None:
                jobs.append(job)
        return jobs[:limit]

    def pending_for(self, key: str) -> Job | None:
        """The queued or running job that will write `key`, if any."""
        with self._condition:
            for job in self._active.values():
                if job.results_location == key or key in self._pending_keys.get(job.id, ()):
                    return job
        return None

    def store_for(self, job: Job) -> ResultStore:
        """Where a job's objects go: the service's store, and the caller's presigned URLs when it sent any."""
        upload_urls = job.spec.get("upload_urls")
        if not upload_urls:
            return self.store
        return UploadUrlStore(self.store, self.uploads, upload_targets(job.results_location, upload_urls))

    def counts(self) -> dict[str, int]:
        with self._condition:
            queued = len(self._queue)
            return {"queued_jobs": queued, "running_jobs": len(self._active) - queued}

    def wait(self, job_id: str, timeout: float) -> Job | None:
        """The job once final, or as it is after `timeout` seconds."""
        with self._condition:
            done = self._done.get(job_id)
        if done is not None:
            done.wait(timeout)
        return self.get(job_id)

    def events(self, job_id: str, position: Position, keepalive_seconds: float) -> Iterator[OutputEvent] | None:
        """A job's events from `position` on: live while it is queued or running, else from its record; None
        for a job this service does not know."""
        with self._condition:
            live = self._live.get(job_id)
        if live is not None:
            return live.follow(position, keepalive_seconds)
        job = self.get(job_id)
        if job is None:
            return None
        return finished_events(job, position)

    def stop_followers(self) -> None:
        """Every reader of a job's events stops following (and may come back to a later run): the HTTP server
        waits for their threads before it stops."""
        with self._condition:
            for live in self._live.values():
                live.close()

    def _live_output(self, job_id: str) -> LiveOutput | None:
        with self._condition:
            return self._live.get(job_id)

    def cancel(self, job_id: str) -> Job:
        with self._condition:
            job = self._active.get(job_id)
            if job is None:
                found = self.get(job_id)
                if found is None:
                    raise JobNotFound(job_id)
                return found
            if job.id in self._cancels:
                # Running, or already being cancelled: its worker finishes it.
                self._cancels[job.id].set()
                return job
            # Taken off the queue; readers see it queued until its cancelled record is final.
            self._queue.remove(job)
            cancelled = self._cancels[job.id] = threading.Event()
            cancelled.set()
        return self._finish(replace(job, status=CANCELLED, finished_at=utc_now(),
                                    error="cancelled before it started"))

    def _work(self) -> None:
        while True:
            with self._condition:
                while not self._queue and not self._stopping:
                    self._work_ready.wait()
                if self._stopping:
                    return
                job = self._queue.popleft()
                job.status = RUNNING
                cancel = self._cancels[job.id] = threading.Event()
                live = self._live.get(job.id)
                if live is not None:
                    live.set_status(RUNNING)
            try:
                self._run(job, cancel)
            except Exception as error:
                log.exception("job runner fault", extra={"event": "job.fault", "job_id": job.id})
                with self._condition:
                    unfinished = job.id in self._active
                if unfinished:
                    self._finish(self._finished(job, JobOutcome(error=self._fault(error)), cancel, 0.0))

    def _run(self, job: Job, cancel: threading.Event) -> None:
        job.started_at = utc_now()
        self._save_quietly(job)
        self._quietly(self.clock.job_started, "data_dir")
        log.info("job started", extra={"event": "job.started", "job_id": job.id, "type": job.type,
                                       "request_id": job.request_id})
        started = time.monotonic()
        workspace = self.workspaces.make(job.id)
        cell: JobCell | None = None
        try:
            try:
                cell = self.containment.job(job.id)
                context = JobContext(job.id, job.spec, job.results_location, self.settings, self.store_for(job),
                                     workspace, cancel, self.run_as,
                                     report=lambda **details: self._report(job, details),
                                     will_write=lambda keys: self._will_write(job, keys), cell=cell,
                                     output=self._live_output(job.id))
                outcome = self.types.executor(job.type).execute(context)
            except Exception as error:
                log.exception("job failed in the service", extra={"event": "job.error", "job_id": job.id})
                outcome = JobOutcome(error=self._fault(error))
        finally:
            stats = self._end_cell(job, cell)
        try:
            self._finish(self._finished(job, outcome, cancel, round(time.monotonic() - started, 3), stats))
        finally:
            # Nothing of the job runs any more: what it leaves on disk goes once the caller has its answer.
            self.workspaces.finish(workspace, nothing_left_running=cell is not None and cell.sealed and cell.empty())
            self._remove_cell(job, cell)

    def _end_cell(self, job: Job, cell: JobCell | None) -> JobStats:
        """Nothing of the job outlives it; what the kernel measured of it is kept."""
        if cell is None:
            return JobStats()
        try:
            cell.end()
            return cell.stats()
        except Exception:
            log.exception("job cgroup not ended", extra={"event": "job.containment_error", "job_id": job.id})
            return JobStats()

    def _remove_cell(self, job: Job, cell: JobCell | None) -> None:
        """Once the job is final, its emptied cgroups go: off the path of anyone waiting for it."""
        if cell is None:
            return
        try:
            cell.remove()
        except Exception:
            log.exception("job cgroup not removed", extra={"event": "job.containment_error", "job_id": job.id})

    def _finished(self, job: Job, outcome: JobOutcome, cancel: threading.Event, duration_s: float,
                  stats: JobStats = JobStats()) -> Job:
        """The job's record once it has run: the only place a run's outcome becomes a job's status."""
        interrupted = self._stopping and cancel.is_set()
        error = outcome.error
        if interrupted:
            error = error or "the service stopped while this job was running"
        with self._condition:
            details = {**job.details, **outcome.details}
        return replace(
            job, exit_status=outcome.exit_status, signal=outcome.signal, cmd_run=outcome.cmd_run,
            stdout=outcome.stdout, stderr=outcome.stderr, output=outcome.output, truncated=outcome.truncated,
            timed_out=outcome.timed_out, artifacts=list(outcome.artifacts), error=error, details=details,
            skipped_artifacts=list(outcome.skipped_artifacts),
            duration_s=duration_s, finished_at=utc_now(), oom_killed=stats.oom_killed,
            peak_memory_bytes=stats.peak_memory_bytes,
            status=job_status(exit_status=outcome.exit_status, error=error, timed_out=outcome.timed_out,
                              cancelled=cancel.is_set(), interrupted=interrupted))

    def _report(self, job: Job, details: dict[str, Any]) -> None:
        with self._condition:
            job.details = {**job.details, **details}

    def _will_write(self, job: Job, keys: Iterable[str]) -> None:
        with self._condition:
            self._pending_keys[job.id] = tuple(keys)

    def _finish(self, job: Job) -> Job:
        """Make a finished job final: result stored, record journalled, then released from the active set.

        Until released, readers see the live job, never final; once released they see the final record, and
        the stored result is already there. Whatever fails on the way, the job is released and waiters wake.
        """
        if job.finished_at is None:
            job = replace(job, finished_at=utc_now())
        saved = False
        try:
            job = self._publish(job)
            saved = self._save_final(job)
        except Exception:
            log.exception("job not finished cleanly", extra={"event": "job.finish_error", "job_id": job.id})
        finally:
            self._release(job, saved)
        log.info("job finished", extra={"event": "job.finished", "job_id": job.id, "type": job.type,
                                        "status": job.status, "exit_status": job.exit_status,
                                        "duration_s": job.duration_s, "request_id": job.request_id})
        self.tally.finished(job)
        for listener in self._finished_listeners:
            self._quietly(lambda: listener(job), None)
        self._quietly(self._prune_journal, None)
        return job

    def _publish(self, job: Job) -> Job:
        """The job with its result document stored; a job whose result could not be stored is failed, never
        succeeded, and says why."""
        try:
            put_json(self.store_for(job), job.results_location, job.result_document())
        except Exception as error:
            reason = self._write_failed(error, "store")
            log.exception("result not stored", extra={"event": "job.store_error", "job_id": job.id})
            note = f"result not stored: {reason}"
            return replace(job, status=FAILED if job.status == SUCCEEDED else job.status,
                           error=f"{job.error}; {note}" if job.error else note)
        self.degradations.recovered("store")
        return job

    def _save_final(self, job: Job) -> bool:
        """Journal the final record, on disk before anyone is told; when that fails, say so in the record, which
        then lives in memory only."""
        try:
            self.journal.save(job, durable=True)
        except Exception as error:
            reason = self._write_failed(error, "data_dir")
            log.error("job record not saved", extra={"event": "job.record_not_saved", "job_id": job.id,
                                                     "reason": reason})
            job.details = {**job.details, "record_not_saved": f"{reason}; this record is kept in memory only "
                                                              "and is lost when the service restarts"}
            # A stale queued or running record would make a restart run the job again, or call it interrupted.
            self._quietly(lambda: self.journal.remove(job.id), None)
            return False
        self.degradations.recovered("data_dir")
        return True

    def _release(self, job: Job, saved: bool) -> None:
        self._quietly(self.clock.job_finished, "data_dir")
        with self._condition:
            kept, limit = (self._recent, RECENT_KEPT) if saved else (self._unsaved, UNSAVED_KEPT)
            kept[job.id] = job
            while len(kept) > limit:
                kept.popitem(last=False)
            self._active.pop(job.id, None)
            self._cancels.pop(job.id, None)
            self._pending_keys.pop(job.id, None)
            done = self._done.pop(job.id, None)
            live = self._live.pop(job.id, None)
            self._condition.notify_all()
        if done is not None:
            done.set()
        if live is not None:
            live.end(job)

    def _prune_journal(self) -> None:
        # In the order jobs finished, from the in-memory index: a step per record removed, no directory listing.
        self.journal.prune(self.settings.jobs_retained, self.settings.jobs_retained_minutes * 60)

    def _save_quietly(self, job: Job) -> None:
        """A journal write the job can do without (its accepted record is already on disk)."""
        try:
            self.journal.save(job)
        except OSError as error:
            self._write_failed(error, "data_dir")
        else:
            self.degradations.recovered("data_dir")

    def _quietly(self, action: Callable[[], Any], source: str | None) -> None:
        """Run a step of finishing a job whose failure must not stop the rest."""
        try:
            action()
        except Exception as error:
            if source is not None and isinstance(error, OSError):
                self._write_failed(error, source)
            log.exception("job bookkeeping step failed", extra={"event": "job.listener_error"})

    def _write_failed(self, error: BaseException, source: str) -> str:
        """Record a failed write as a reason the service is degraded, and say what could not be written."""
        data_dir = self.settings.data_dir
        filename = getattr(error, "filename", None)
        if filename and Path(filename).is_relative_to(data_dir):
            source = "data_dir"
        place = f"the data dir {data_dir}" if source == "data_dir" else f"the result store {self.settings.store}"
        reason = write_fault(place, error)
        self.degradations.failed(source, reason)
        return reason

    def _fault(self, error: Exception) -> str:
        """What a job is told when the service failed running it."""
        if is_storage_fault(error):
            return f"the service could not write: {self._write_failed(error, 'data_dir')}"
        return f"internal error: {type(error).__name__}"
