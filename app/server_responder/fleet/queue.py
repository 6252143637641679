"""Queue mode: jobs taken from an SQS queue, each message run as a job, deleted once its result is stored.

- One thread receives, with long polling, never more messages than there are free workers (none while they
  are all busy, none while the box drains or stops). A message becomes a job of the id its message id gives
  (`job_id_for_message`), so a message received again after its box died is run as the same job and writes
  the same keys.
- Another thread keeps each taken message invisible to other boxes while its job is queued or running (a
  heartbeat of ChangeMessageVisibility), and deletes it once the job's result document is in the store: after
  the upload spool has delivered it, however many retries that takes.
- A message that is no job request is not run and not touched: it reappears, and after the queue's
  maxReceiveCount its redrive policy moves it to the dead-letter queue. A message the service refuses (queue
  full, draining, data dir unwritable) is made visible again at once, for another box.

Receipts: each taken message's receipt handle is kept in `<data_dir>/queue/<job id>.json` while its job is
this box's. The job journal already keeps the job across a restart; with its receipt kept too, the restarted
service goes on extending and then deletes the message it still holds, instead of letting it reappear and be
run a second time elsewhere. The receipt file is written without waiting for the disk: when a crash loses
one, the message reappears, and if this box receives it again it sees the job already done and only deletes
it. When a receipt handle has gone stale (the box was down past the visibility timeout), SQS ignores its
deletion and the message is run again, writing the same keys: at least once, never lost.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from server_responder.files import write_atomically
from server_responder.fleet.group import Backoff, aws_client, aws_errors, describe_error
from server_responder.fleet.messages import (
    InvalidMessage, excerpt, job_id_for_message, parse_message, receive_count,
)
from server_responder.jobs.record import FINISHED, INTERRUPTED, Job
from server_responder.jobs.service import DataDirUnwritable, JobExists, JobService, NotAccepting, QueueFull
from server_responder.jobs.types import JobTypes
from server_responder.lifecycle.drain import DrainSwitch
from server_responder.results.store import ResultStore
from server_responder.results.upload_spool import SpooledStore, UploadSpool
from server_responder.settings import Settings

log = logging.getLogger("server_responder.fleet")

# SQS hands out and takes at most this many messages a call.
SQS_BATCH = 10
# A stopping box waits this long at most for a receive in flight; what it returns later reappears by itself.
STOP_WAIT_SECONDS = 5.0
# How the result of a finished job stands.
STORED, PENDING, MISSING = "stored", "pending", "missing"


def receivable(workers: int, counts: dict[str, int], limit: int = SQS_BATCH) -> int:
    """How many messages to ask for: one per free worker, at most `limit`, none when every worker has a job."""
    free = workers - counts.get("queued_jobs", 0) - counts.get("running_jobs", 0)
    return max(0, min(limit, free))


def result_state(job: Job, stored_document: dict[str, Any] | None, spooled: bool) -> str:
    """Whether the store holds a finished job's result: `pending` while the upload spool still has it."""
    if spooled:
        return PENDING
    if (isinstance(stored_document, dict) and stored_document.get("job_id") == job.id
            and stored_document.get("status") in FINISHED and stored_document.get("status") != INTERRUPTED):
        return STORED
    return MISSING


@dataclass
class Receipt:
    """A message this box has taken, and what it takes to extend or delete it."""

    job_id: str
    message_id: str
    handle: str
    receive_count: int
    # When its visibility was last extended (monotonic; not kept on disk).
    extended_at: float = field(default=0.0, compare=False)


class Receipts:
    """The receipts of taken messages, one file each, so a restarted service can still settle its messages."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def save(self, receipt: Receipt) -> None:
        record = {key: value for key, value in asdict(receipt).items() if key != "extended_at"}
        write_atomically(self.directory / f"{receipt.job_id}.json", json.dumps(record).encode(), mode=0o600)

    def remove(self, job_id: str) -> None:
        try:
            (self.directory / f"{job_id}.json").unlink(missing_ok=True)
        except OSError as error:
            log.warning("queue receipt not removed", extra={"event": "queue.receipt_error", "job_id": job_id,
                                                            "reason": str(error)})

    def load(self) -> list[Receipt]:
        found = []
        for path in self.directory.glob("*.json"):
            try:
                raw = json.loads(path.read_text())
                found.append(Receipt(str(raw["job_id"]), str(raw["message_id"]), str(raw["handle"]),
                                     int(raw["receive_count"])))
            except (OSError, ValueError, KeyError, TypeError):
                log.warning("queue receipt unreadable, removed", extra={"event": "queue.receipt_error",
                                                                         "file": path.name})
                path.unlink(missing_ok=True)
        return found


class QueueConsumer:
    def __init__(self, settings: Settings, jobs: JobService, types: JobTypes, drain: DrainSwitch,
                 store: ResultStore, uploads: UploadSpool | None, client: Any = None,
                 on_accepted: Callable[[], None] = lambda: None) -> None:
        self.settings = settings
        self.queue_url = settings.queue_url
        self.jobs = jobs
        self.types = types
        self.drain = drain
        # Read past the spool: what counts is what the store itself holds.
        self.store = store.remote if isinstance(store, SpooledStore) else store
        self.uploads = uploads
        self.on_accepted = on_accepted
        self.receipts = Receipts(settings.data_dir / "queue")
        self._client = client
        self._lock = threading.Lock()
        self._tracked: dict[str, Receipt] = {}
        # Tracked jobs that have finished, until their message is deleted or given back.
        self._settling: set[str] = set()
        self._capacity_freed = threading.Event()
        self._job_done = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        # Whether the latest receive found nothing: a box leaves its group only when the queue has no work for it.
        self.last_receive_empty: bool | None = None
        jobs.on_finished(self._finished)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = aws_client("sqs")
        return self._client

    def start(self) -> None:
        """Take up the messages an earlier run held, then receive; call once the job service has started."""
        self._stopping.clear()
        self._recover()
        self._threads = [threading.Thread(target=self._receive_loop, name="queue-receive", daemon=True),
                         threading.Thread(target=self._heartbeat_loop, name="queue-heartbeat", daemon=True)]
        for thread in self._threads:
            thread.start()
        log.info("taking jobs from the queue", extra={"event": "queue.started", "queue_url": self.queue_url})

    def stop(self) -> None:
        self._stopping.set()
        self._capacity_freed.set()
        self._job_done.set()
        for thread in self._threads:
            thread.join(STOP_WAIT_SECONDS)
        self._threads = []
        try:
            # Jobs the stop interrupted give their messages back now, for another box, not after the timeout.
            self._settle()
        except Exception:
            log.exception("queue messages not settled at stop", extra={"event": "queue.fault"})

    # ---- receiving ---------------------------------------------------------------------------------------------

    def _receive_loop(self) -> None:
        backoff = Backoff()
        paused = False
        while not self._stopping.is_set():
            self._capacity_freed.clear()
            refusing = self.drain.draining or not self.jobs.accepting
            if refusing != paused:
                paused = refusing
                # Said once the receive before the drain has returned: from here on, nothing is received.
                log.info("queue receiving " + ("paused: the box is draining" if paused else "resumed"),
                         extra={"event": "queue.paused" if paused else "queue.resumed"})
            count = 0 if refusing else receivable(self.settings.workers, self.jobs.counts())
            if count == 0:
                self._capacity_freed.wait(min(1.0, self.settings.queue_heartbeat_seconds))
                continue
            try:
                messages = self.client.receive_message(
                    QueueUrl=self.queue_url, MaxNumberOfMessages=count,
                    WaitTimeSeconds=self.settings.queue_wait_seconds,
                    VisibilityTimeout=self.settings.queue_visibility_timeout,
                    AttributeNames=["ApproximateReceiveCount"]).get("Messages", [])
            except aws_errors() as error:
                delay = backoff.failed()
                log.warning("queue receive failed", extra={
                    "event": "queue.receive_failed", "reason": describe_error(error), "retry_in_s": delay})
                self._stopping.wait(delay)
                continue
            except Exception:
                log.exception("queue receive fault", extra={"event": "queue.fault"})
                self._stopping.wait(backoff.failed())
                continue
            backoff.succeeded()
            self.last_receive_empty = not messages
            for message in messages:
                try:
                    self._take(message)
                except Exception:
                    log.exception("queue message fault", extra={"event": "queue.fault"})

    def _take(self, message: dict[str, Any]) -> None:
        message_id, handle, body = message["MessageId"], message["ReceiptHandle"], message.get("Body", "")
        job_id = job_id_for_message(message_id)
        receipt = Receipt(job_id, message_id, handle, receive_count(message), time.monotonic())
        with self._lock:
            held = self._tracked.get(job_id)
            if held is not None:
                # This box still has the job (a heartbeat came too late): SQS now honours only the newest receipt.
                held.handle, held.receive_count, held.extended_at = handle, receipt.receive_count, time.monotonic()
        if held is not None:
            self._save_quietly(held)
            return
        if self._stopping.is_set():
            self._give_back([receipt], "stopping")
            return
        try:
            job_request = parse_message(body, self.settings, self.types)
        except InvalidMessage as error:
            # Neither deleted nor given back: it reappears after its visibility timeout, and after the queue's
            # maxReceiveCount the redrive policy moves it to the dead-letter queue.
            log.error("queue message is not a job request; not run", extra={
                "event": "queue.invalid_message", "message_id": message_id, "receive_count": receipt.receive_count,
                "reason": str(error), "body_start": excerpt(body, self.settings.secrets())})
            return
        known = self.jobs.get(job_id)
        if known is not None and known.finished and self._result_state(known) == STORED:
            # Run and stored here before, its deletion lost (a crash, a stale receipt): only the deletion is left.
            self._delete([receipt])
            return
        try:
            self.receipts.save(receipt)
        except OSError as error:
            log.error("queue receipt not saved; message given back", extra={
                "event": "queue.receipt_error", "job_id": job_id, "reason": str(error)})
            self._give_back([receipt], "data_dir_unwritable")
            return
        with self._lock:
            self._tracked[job_id] = receipt
        try:
            self.jobs.submit(job_request.type, job_request.spec, job_request.results_location, job_id=job_id,
                             details={"queue_message_id": message_id, "receive_count": receipt.receive_count})
        except JobExists:
            return  # queued or running here already: the receipt just tracked is the newest one
        except (QueueFull, NotAccepting, DataDirUnwritable) as error:
            self._untrack(job_id)
            self._give_back([receipt], type(error).__name__)
            return
        except Exception:
            self._untrack(job_id)
            self._give_back([receipt], "fault")
            raise
        self.on_accepted()

    # ---- the heartbeat: extending, deleting, giving back -------------------------------------------------------

    def _finished(self, job: Job) -> None:
        with self._lock:
            if job.id in self._tracked:
                self._settling.add(job.id)
        self._job_done.set()
        self._capacity_freed.set()

    def _heartbeat_loop(self) -> None:
        interval = min(self.settings.queue_heartbeat_seconds, self.settings.upload_retry_seconds)
        while not self._stopping.is_set():
            self._job_done.clear()
            try:
                self._settle()
                self._extend()
            except Exception:
                log.exception("queue heartbeat fault", extra={"event": "queue.fault"})
            self._job_done.wait(interval)

    def _settle(self) -> None:
        """Delete the messages whose job's result is stored; give back those whose job could not finish here."""
        with self._lock:
            settling = [self._tracked[job_id] for job_id in self._settling if job_id in self._tracked]
        done, back = [], []
        for receipt in settling:
            job = self.jobs.get(receipt.job_id)
            if job is not None and not job.finished:
                continue  # run again here (a redelivery of a finished job): it is settled when it finishes
            if job is None:
                state = "forgotten"  # its record pruned before its result was delivered
            else:
                state = INTERRUPTED if job.status == INTERRUPTED else self._result_state(job)
            if state == STORED:
                done.append(receipt)
            elif state != PENDING:
                back.append(receipt)
                log.warning("queue job not settled here; message given back", extra={
                    "event": "queue.job_returned", "job_id": receipt.job_id, "result": state})
        self._delete(done)
        self._give_back(back, "not_stored")

    def _extend(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [receipt for receipt in self._tracked.values()
                   if now - receipt.extended_at >= self.settings.queue_heartbeat_seconds]
        failed = self._batch("change_message_visibility_batch", due,
                             {"VisibilityTimeout": self.settings.queue_visibility_timeout})
        for receipt in due:
            if receipt.job_id not in failed:
                receipt.extended_at = now

    def _delete(self, receipts: list[Receipt]) -> None:
        failed = self._batch("delete_message_batch", receipts, {})
        for receipt in receipts:
            if receipt.job_id in failed and failed[receipt.job_id] != "ReceiptHandleIsInvalid":
                continue  # tried again at the next heartbeat
            self._untrack(receipt.job_id)
            log.info("queue message deleted", extra={"event": "queue.deleted", "job_id": receipt.job_id,
                                                     "message_id": receipt.message_id,
                                                     "receive_count": receipt.receive_count})

    def _give_back(self, receipts: list[Receipt], reason: str) -> None:
        """Make messages visible again at once, for any box; one that fails reappears after its timeout anyway."""
        self._batch("change_message_visibility_batch", receipts, {"VisibilityTimeout": 0})
        for receipt in receipts:
            self._untrack(receipt.job_id)
            log.info("queue message given back", extra={"event": "queue.given_back", "job_id": receipt.job_id,
                                                        "message_id": receipt.message_id, "reason": reason})

    def _batch(self, action: str, receipts: Iterable[Receipt], extra: dict[str, Any]) -> dict[str, str]:
        """One SQS batch call per ten receipts; the job ids that failed, with SQS's error code."""
        receipts = list(receipts)
        failed: dict[str, str] = {}
        for start in range(0, len(receipts), SQS_BATCH):
            chunk = receipts[start:start + SQS_BATCH]
            entries = [{"Id": str(n), "ReceiptHandle": receipt.handle, **extra} for n, receipt in enumerate(chunk)]
            try:
                answer = getattr(self.client, action)(QueueUrl=self.queue_url, Entries=entries)
            except aws_errors() as error:
                log.warning("queue call failed; tried again later", extra={
                    "event": "queue.call_failed", "action": action, "reason": describe_error(error)})
                failed.update({receipt.job_id: "call_failed" for receipt in chunk})
                continue
            for entry in answer.get("Failed", []):
                receipt = chunk[int(entry["Id"])]
                failed[receipt.job_id] = entry.get("Code", "error")
                log.warning("queue call failed for a message", extra={
                    "event": "queue.call_failed", "action": action, "job_id": receipt.job_id,
                    "reason": f"{entry.get('Code')}: {entry.get('Message', '')}"})
        return failed

    # ---- state -------------------------------------------------------------------------------------------------

    def _result_state(self, job: Job) -> str:
        spooled = self.uploads is not None and self.uploads.read(job.results_location) is not None
        if spooled:
            return PENDING
        try:
            stored = self.store.get(job.results_location)
            document = json.loads(stored.body) if stored is not None else None
        except ValueError:
            document = None
        except Exception as error:
            log.warning("result not checked; tried again later", extra={
                "event": "queue.check_failed", "job_id": job.id, "reason": str(error)})
            return PENDING
        return result_state(job, document, spooled=False)

    def _recover(self) -> None:
        """The receipts an earlier run left: jobs still queued are tracked again, finished ones settled."""
        for receipt in self.receipts.load():
            job = self.jobs.get(receipt.job_id)
            if job is None:
                # Taken but never accepted (the service died in between): for another box, or this one.
                self._give_back([receipt], "not_accepted")
                continue
            with self._lock:
                self._tracked[receipt.job_id] = receipt
                if job.finished:
                    self._settling.add(receipt.job_id)
            log.info("queue message taken up again", extra={"event": "queue.recovered", "job_id": receipt.job_id,
                                                            "status": job.status})

    def _untrack(self, job_id: str) -> None:
        with self._lock:
            self._tracked.pop(job_id, None)
            self._settling.discard(job_id)
        self.receipts.remove(job_id)

    def _save_quietly(self, receipt: Receipt) -> None:
        try:
            self.receipts.save(receipt)
        except OSError as error:
            log.warning("queue receipt not saved", extra={"event": "queue.receipt_error", "job_id": receipt.job_id,
                                                          "reason": str(error)})
