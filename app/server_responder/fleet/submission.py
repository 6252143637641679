"""Sending a job to the fleet's queue, and waiting for its result document in the fleet's results store."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from server_responder.fleet.messages import job_id_for_message
from server_responder.fleet.polling import poll_pauses
from server_responder.jobs.record import FINISHED, INTERRUPTED
from server_responder.results.keys import default_location
from server_responder.results.store import ResultStore, StoreUnavailable



class QueueRefused(Exception):
    """SQS did not take the message; nothing was queued."""


@dataclass(frozen=True)
class QueuedJob:
    """A job SQS has accepted: its id and where its result document will be."""

    job_id: str
    message_id: str
    queue_url: str
    store: str
    results_location: str

    def document(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "message_id": self.message_id, "queue_url": self.queue_url,
                "store": self.store, "results_location": self.results_location,
                "result_url": result_url(self.store, self.results_location)}


def result_url(store: str, key: str) -> str | None:
    """The S3 address of a key in an s3:// store; None for a local store, whose files are not named by keys."""
    if not store.startswith("s3://"):
        return None
    from server_responder.results.s3 import S3Location

    location = S3Location.parse(store)
    return f"s3://{location.bucket}/{location.prefix}{key}"


def send_job(sqs: Any, queue_url: str, request: Mapping[str, Any], store: str) -> QueuedJob:
    """One message whose body is the job request; the job's id follows from the id SQS gives the message."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        sent = sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(request))
    except ClientError as error:
        reason = error.response.get("Error", {})
        raise QueueRefused(f"{reason.get('Code') or error}: {reason.get('Message', '')}".rstrip(": ")) from None
    except BotoCoreError as error:
        raise QueueRefused(f"{type(error).__name__}: {error}") from None
    job_id = job_id_for_message(sent["MessageId"])
    location = request.get("results_location") or default_location(job_id)
    return QueuedJob(job_id, sent["MessageId"], queue_url, store, str(location))


@dataclass(frozen=True)
class Awaited:
    """What waiting found: the job's final result document, or the last word before the deadline."""

    document: dict[str, Any] | None
    final: bool
    problem: str | None = None


def wait_for_result(store: ResultStore, job: QueuedJob, seconds: float,
                    clock: Callable[[], float] = time.monotonic,
                    pause: Callable[[float], None] = time.sleep) -> Awaited:
    """Poll the store, with backoff, until this job's finished result document is there or `seconds` pass.

    An interrupted run is not the last word in a fleet: its message reappears after the visibility timeout
    and another box runs the job again, writing the same key. So it is returned only at the deadline.
    """
    deadline = clock() + seconds
    pauses = poll_pauses()
    seen: dict[str, Any] | None = None
    problem: str | None = None
    while True:
        try:
            stored = store.get(job.results_location)
            problem = None
        except StoreUnavailable as error:
            stored, problem = None, str(error)
        document = _own_document(stored.body if stored else None, job.job_id)
        if document is not None:
            if document.get("status") in FINISHED - {INTERRUPTED}:
                return Awaited(document, final=True)
            seen = document
        remaining = deadline - clock()
        if remaining <= 0:
            return Awaited(seen, final=False, problem=problem)
        pause(min(next(pauses), remaining))


def _own_document(body: bytes | None, job_id: str) -> dict[str, Any] | None:
    """The result document of this job; an earlier job's document at a reused location is not it."""
    if body is None:
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None
    return document if isinstance(document, dict) and document.get("job_id") == job_id else None
