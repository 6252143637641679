"""Completion callbacks: a POST of where a finished job's results are, sent in the background with retries."""

from __future__ import annotations

import logging
import threading
import urllib.parse
from collections.abc import Iterable
from typing import Any

from server_responder.http_client import HttpClient, HttpFailure, checked_destination
from server_responder.jobs.record import Job
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
    """A `JobService.on_finished` listener; each callback gets its own thread so no job waits for it."""

    def __init__(self, settings: Settings, *, attempts: int = ATTEMPTS, backoff: float = BACKOFF_SECONDS,
                 client: HttpClient | None = None) -> None:
        self.default_url = settings.callback_url
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
        threading.Thread(target=self.deliver, args=(url, document), name=f"callback-{job.id[:8]}",
                         daemon=True).start()

    def deliver(self, url: str, document: dict[str, Any]) -> bool:
        """POST the document until the receiver takes it (2xx-4xx), retrying errors and 5xx with backoff."""
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
