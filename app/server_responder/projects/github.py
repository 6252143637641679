"""GitHub push deliveries: the signature, the body in either encoding, the push itself, redelivery memory."""

from __future__ import annotations

import hashlib
import hmac
import logging
import json
import re
import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server_responder import safe_json
from server_responder.files import write_atomically
from server_responder.jobs.record import Job
from server_responder.jobs.service import JobService
from server_responder.projects.git import InvalidProject, is_full_sha, validate_project

log = logging.getLogger("server_responder.github")
SIGNATURE_PREFIX = "sha256="
_DELIVERY_ID = re.compile(r"[A-Za-z0-9-]{1,100}")
_ZERO_SHA = re.compile(r"0+")


class DeliveryError(ValueError):
    """The delivery is not one we can read: `field` names the part at fault."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


def signature_matches(secret: str, body: bytes, header: str | None) -> bool:
    """Whether `X-Hub-Signature-256` is the HMAC-SHA256 of the raw body, compared in constant time."""
    if not header or not header.startswith(SIGNATURE_PREFIX):
        return False
    expected = SIGNATURE_PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header.strip().encode("utf-8", errors="replace"))


def sign(secret: str, body: bytes) -> str:
    return SIGNATURE_PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def delivery_payload(content_type: str, body: bytes) -> dict[str, Any]:
    """GitHub sends the event as JSON, or as a form whose `payload` field holds the JSON."""
    if content_type == "application/x-www-form-urlencoded":
        try:
            fields = urllib.parse.parse_qs(body.decode("utf-8"), max_num_fields=100)
        except (UnicodeDecodeError, ValueError):
            raise DeliveryError("body", "is not a readable form") from None
        if not fields.get("payload"):
            raise DeliveryError("payload", "is required in a form delivery")
        text = fields["payload"][0]
    elif content_type in ("application/json", ""):
        text = body.decode("utf-8", errors="replace")
    else:
        raise DeliveryError("Content-Type", "must be application/json or application/x-www-form-urlencoded")
    try:
        payload = safe_json.loads(text)
    except safe_json.UnsafeJson as error:
        raise DeliveryError("body", f"is not acceptable JSON: {error}") from None
    if not isinstance(payload, dict):
        raise DeliveryError("body", "must be a JSON object")
    return payload


def is_branch_deletion(push: Mapping[str, Any]) -> bool:
    after = push.get("after")
    return push.get("deleted") is True or (isinstance(after, str) and bool(_ZERO_SHA.fullmatch(after)))


def deleted_ref(push: Mapping[str, Any]) -> str:
    """What a deletion push removed, in words: `tag v1.2`, `branch main`, or the ref as sent."""
    ref = push.get("ref")
    if not isinstance(ref, str) or not ref:
        return "a ref"
    shown = ref[:256]
    for prefix, kind in (("refs/tags/", "tag"), ("refs/heads/", "branch")):
        if shown.startswith(prefix):
            return f"{kind} {shown[len(prefix):]}"
    return f"ref {shown}"


def deletion_detail(push: Mapping[str, Any]) -> str:
    return f"{deleted_ref(push)} was deleted: a deletion has nothing to run"


def push_project(push: Mapping[str, Any]) -> str:
    repository = push.get("repository")
    if not isinstance(repository, Mapping):
        raise DeliveryError("repository", "is missing from the push")
    project = repository.get("full_name")
    if project is None:
        owner = repository.get("owner")
        owner_name = (owner.get("login") or owner.get("name")) if isinstance(owner, Mapping) else None
        project = f"{owner_name}/{repository.get('name')}"
    try:
        return validate_project(project)
    except InvalidProject as error:
        raise DeliveryError("repository", f"full_name {error}") from None


def push_spec(push: Mapping[str, Any]) -> dict[str, Any]:
    """The job a push asks for: the project at the pushed commit, and what to remember of the push."""
    if is_branch_deletion(push):
        raise DeliveryError("after", f"is all zeros: {deletion_detail(push)}")
    after = push.get("after")
    if not isinstance(after, str) or not is_full_sha(after):
        raise DeliveryError("after", "must be the full sha of the pushed commit")
    ref = push.get("ref")
    if ref is not None and (not isinstance(ref, str) or len(ref) > 256):
        raise DeliveryError("ref", "must be a ref name")
    return {"project": push_project(push), "sha": after, "ref": ref, "push": push_summary(push)}


def push_summary(push: Mapping[str, Any]) -> dict[str, Any]:
    """What the project index keeps of a push: enough to show it, small enough to keep for every commit."""
    head = push.get("head_commit") if isinstance(push.get("head_commit"), Mapping) else {}
    pusher = push.get("pusher") if isinstance(push.get("pusher"), Mapping) else {}
    author = head.get("author") if isinstance(head.get("author"), Mapping) else {}

    def text(value: Any, limit: int = 1000) -> str | None:
        return value[:limit] if isinstance(value, str) else None

    return {
        "ref": text(push.get("ref")),
        "before": text(push.get("before")),
        "after": text(push.get("after")),
        "compare": text(push.get("compare")),
        "pusher": text(pusher.get("name")),
        "head_commit": {"id": text(head.get("id")), "message": text(head.get("message")),
                        "timestamp": text(head.get("timestamp")), "author": text(author.get("name"))},
    }


class DeliveryLog:
    """Which job each GitHub delivery started, kept in the data dir so a redelivery after a restart is known."""

    def __init__(self, directory: Path, keep: int = 5000) -> None:
        self.directory = directory
        self.keep = keep
        self.lock = threading.Lock()

    def valid_id(self, delivery: str | None) -> bool:
        return bool(delivery) and bool(_DELIVERY_ID.fullmatch(delivery))

    def job_for(self, delivery: str) -> str | None:
        try:
            return json.loads((self.directory / f"{delivery}.json").read_text())["job_id"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def record(self, delivery: str, job_id: str) -> None:
        # Made at the first record, so a data dir that cannot be written fails here, after the job is accepted.
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomically(self.directory / f"{delivery}.json", json.dumps({"job_id": job_id}).encode(), mode=0o600,
                         durable=True)
        self._prune()

    def _prune(self) -> None:
        entries = list(self.directory.glob("*.json"))
        if len(entries) <= self.keep:
            return
        entries.sort(key=lambda path: path.stat().st_mtime if path.exists() else 0.0)
        for path in entries[: len(entries) - self.keep]:
            path.unlink(missing_ok=True)


@dataclass(frozen=True)
class PushStart:
    """The job a push delivery started, or for a redelivery the one its first delivery started (None if pruned)."""

    job_id: str
    job: Job | None
    redelivery: bool


class PushDeliveries:
    """Starts one job per GitHub push delivery; a redelivery of a known delivery gets the first one's job."""

    def __init__(self, jobs: JobService, directory: Path) -> None:
        self.jobs = jobs
        self.directory = directory
        self._log: DeliveryLog | None = None

    @property
    def log(self) -> DeliveryLog:
        # Made on first use: a responder without a webhook secret keeps no delivery log.
        if self._log is None:
            self._log = DeliveryLog(self.directory)
        return self._log

    def valid_id(self, delivery: str) -> bool:
        return self.log.valid_id(delivery)

    def start_once(self, spec: dict[str, Any], delivery: str | None, request_id: str) -> PushStart:
        """QueueFull or NotAccepting as JobService.submit raises them."""
        with self.log.lock:
            first = self.log.job_for(delivery) if delivery else None
            if first is not None:
                return PushStart(first, self.jobs.get(first), redelivery=True)
            job = self.jobs.submit("github_push", spec, request_id=request_id)
            if delivery:
                try:
                    self.log.record(delivery, job.id)
                except OSError as error:
                    # The job is accepted and runs; only a redelivery of this one would start it again.
                    log.warning("delivery not recorded", extra={"event": "github.delivery_not_recorded",
                                                                "delivery": delivery, "error": str(error)})
        return PushStart(job.id, job, redelivery=False)
