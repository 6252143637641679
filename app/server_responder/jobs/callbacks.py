"""Completion callbacks: a POST of where a finished job's results are, sent in the background with retries."""

from __future__ import annotations

import json
import logging
import threading
import urllib.parse
from collections.abc import Iterable
from typing import Any

from server_responder.http_client import HttpClient, HttpFailure, checked_destination
from server_responder.jobs.record import Job
from server_responder.results.location import spool_directory
from server_responder.results.store import JSON_TYPE
from server_responder.results.upload_spool import UploadSpool
from server_responder.settings import Settings

log = logging.getLogger("server_responder.callbacks")

MAX_URL_LENGTH = 2048
ATTEMPTS = 5
BACKOFF_SECONDS = 0.5
REQUEST_TIMEOUT_SECONDS = 10.0


def validate_callback_url(url: object, refused_networks: Iterable[str] = ()) -> str:
    """`url` if completion callbacks may be sent to it; InvalidDestination says why not."""
    return checked_destination(url, max_length=MAX_URL_LENGTH, refused_networks=refused_networks)


def callback_document(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "status": job.status,
        "exit_status": job.exit_status,
        "project_key": job.details.get("project_key"),
        "commit_key": job.details.get("commit_key"),
        "results_location": job.results_location,
    }


class CompletionCallbacks:
    """A `JobService.on_finished` listener. Each callback is spooled in the data dir and sent from there in the
    background, retried with the uploads' backoff until the receiver takes it (2xx) or refuses it (4xx), also
    after a restart; no job waits for it."""

    def __init__(self, settings: Settings, spool: UploadSpool | None = None, *, attempts: int = ATTEMPTS,
                 backoff: float = BACKOFF_SECONDS, client: HttpClient | None = None) -> None:
        self.default_url = settings.callback_url
        self.spool = spool or UploadSpool(spool_directory(settings), None,
                                          retry_seconds=settings.upload_retry_seconds,
                                          retry_max_seconds=settings.upload_retry_max_seconds)
        self.attempts = attempts
        self.backoff = backoff
        self.client = client or HttpClient(timeout=REQUEST_TIMEOUT_SECONDS)

    def job_finished(self, job: Job) -> None:
        url = job.spec.get("callback_url") or self.default_url
        if not url:
            return
        document = callback_document(job)
        if job.details.get("commit_keys"):
            document["commit_keys"] = job.details["commit_keys"]
        try:
            self.spool.add(job.id, json.dumps(document).encode(), JSON_TYPE, url, method="POST", in_background=True)
        except OSError as error:
            # A data dir that cannot be written still gets its callbacks out, only not across a restart.
            log.warning("callback not spooled; sent from memory", extra={
                "event": "callback.not_spooled", "job_id": job.id, "reason": str(error)})
            threading.Thread(target=self.deliver, args=(url, document), name=f"callback-{job.id[:8]}",
                             daemon=True).start()

    def deliver(self, url: str, document: dict[str, Any]) -> bool:
        """Without the spool: POST the document until the receiver takes it (2xx-4xx), retrying errors and 5xx with backoff."""
        host = urllib.parse.urlsplit(url).hostname

        def retrying(attempt: int, status: int | None, reason: str | None) -> None:
            log.warning("callback failed", extra={
                "event": "callback.retry", "job_id": document["job_id"], "host": host, "attempt": attempt,
                "http_status": status, "reason": reason})

        try:
            answer = self.client.json("POST", url, document, attempts=self.attempts, backoff=self.backoff,
                                      on_retry=retrying)
        except HttpFailure as error:
            retrying(self.attempts, None, str(error).split(":")[0])
        else:
            if answer.status < 500:
                level = logging.INFO if answer.status < 400 else logging.WARNING
                log.log(level, "callback delivered", extra={
                    "event": "callback.delivered", "job_id": document["job_id"], "host": host,
                    "http_status": answer.status})
                return answer.status < 400
            retrying(self.attempts, answer.status, None)
        log.error("callback given up", extra={"event": "callback.failed", "job_id": document["job_id"],
                                              "host": host, "attempts": self.attempts})
        return False
