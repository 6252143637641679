"""What a job sent through the fleet's queue is called, the same on the sending and on the running side."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from server_responder import safe_json
from server_responder.jobs.requests import parse_job_request
from server_responder.jobs.types import JobRequest, JobTypes, RequestError, UnsupportedJobType
from server_responder.settings import Settings


def job_id_for_message(message_id: str) -> str:
    """The id of the job an SQS message asks for.

    Derived from the message id, so a message received again after its box died runs as the same job and
    writes the same result keys; the sender knows the id, and the results location, as soon as SQS accepts it.
    It has the form of every other job id (40 hex digits).
    """
    return hashlib.sha1(message_id.encode("utf-8"), usedforsecurity=False).hexdigest()


class InvalidMessage(ValueError):
    """A message that is no job request; the message says why, without repeating the body."""


def parse_message(body: str, settings: Settings, types: JobTypes) -> JobRequest:
    """The job a message's body asks for: the JSON of `POST /jobs`, checked by the same code, as a token-level
    request (whoever may send to the queue is authorised by the queue's policy)."""
    if len(body.encode("utf-8", "surrogatepass")) > settings.max_body_bytes:
        raise InvalidMessage(f"the body is larger than max_body_bytes ({settings.max_body_bytes})")
    try:
        return parse_job_request(safe_json.loads(body), settings, types, authorized=True)
    except safe_json.UnsafeJson as error:
        raise InvalidMessage(f"body: {error}") from None
    except RequestError as error:
        raise InvalidMessage(str(error)) from None
    except UnsupportedJobType as error:
        raise InvalidMessage(f"job type {error.args[0]} is not available on this responder") from None


def receive_count(message: Mapping[str, Any]) -> int:
    """How many times SQS has handed this message out, this time included (1 when it does not say)."""
    raw = (message.get("Attributes") or {}).get("ApproximateReceiveCount")
    try:
        return max(1, int(raw))
    except (TypeError, ValueError):
        return 1


def excerpt(body: str, secrets: list[str], limit: int = 60) -> str:
    """The start of a body for a log line: short, one line, with the service's secrets masked."""
    for secret in secrets:
        body = body.replace(secret, "***")
    shown = body[:limit].encode("unicode_escape").decode("ascii")
    return shown + ("…" if len(body) > limit else "")
