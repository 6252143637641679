"""The last job-submitting request, kept in memory for the admin page with every credential redacted."""

from __future__ import annotations

import json
import logging
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from server_responder import safe_json

log = logging.getLogger("server_responder.web")

REDACTED = "<redacted>"
MAX_SHOWN_CHARS = 4000
# Names whose values are credentials wherever they appear: headers, form fields, JSON keys.
_SENSITIVE_NAME = re.compile(r"token|secret|signature|passw|authoriz|cookie|credential|(api|access|private)[_-]?key",
                             re.IGNORECASE)
# Fields whose values are all hidden because they may carry a caller's secrets.
_HIDDEN_VALUES = frozenset({"env"})


class RequestLike(Protocol):
    method: str
    path: str
    remote: str
    request_id: str
    headers: Mapping[str, str]
    query: Mapping[str, str]

    @property
    def body(self) -> bytes: ...

    @property
    def content_type(self) -> str: ...


@dataclass(frozen=True)
class RecordedRequest:
    received_at: str
    method: str
    path: str
    remote: str
    request_id: str
    headers: tuple[tuple[str, str], ...]
    query: tuple[tuple[str, str], ...]
    fields: tuple[tuple[str, str], ...]
    body_note: str


class RequestRecorder:
    """Keeps the most recent request it is given, redacted as it is recorded."""

    def __init__(self, secrets: Callable[[], Iterable[str]] = tuple) -> None:
        self._secrets = secrets
        self._last: RecordedRequest | None = None

    @property
    def last(self) -> RecordedRequest | None:
        return self._last

    def record(self, incoming: RequestLike) -> None:
        """Remember `incoming`; reading its body raises only what the handler reading it would raise."""
        body = incoming.body
        try:
            self._last = redacted_request(incoming, body, [s for s in self._secrets() if s])
        except Exception:
            # The admin page's view of a request must never stop a job from being submitted.
            log.warning("request not recorded", exc_info=True, extra={"event": "admin.record_failed"})


def redacted_request(incoming: RequestLike, body: bytes, secrets: list[str]) -> RecordedRequest:
    fields, note = _body_fields(incoming.content_type, body)
    return RecordedRequest(
        received_at=datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        method=incoming.method,
        path=incoming.path,
        remote=incoming.remote,
        request_id=incoming.request_id,
        headers=tuple((name, _shown(name, value, secrets)) for name, value in sorted(incoming.headers.items())),
        query=tuple((name, _shown(name, value, secrets)) for name, value in incoming.query.items()),
        fields=tuple((name, _shown(name, value, secrets)) for name, value in fields),
        body_note=note,
    )


def _body_fields(content_type: str, body: bytes) -> tuple[list[tuple[str, Any]], str]:
    if not body:
        return [], "no body"
    size = f"{len(body)} bytes"
    if content_type == "application/x-www-form-urlencoded":
        try:
            pairs = urllib.parse.parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True,
                                           max_num_fields=1000)
        except ValueError:
            return [], f"{size} of form data with too many fields"
        return pairs, f"{size} of form data"
    if content_type in ("application/json", ""):
        try:
            document = safe_json.loads(body)
        except safe_json.UnsafeJson:
            return [], f"{size}, not valid JSON"
        if isinstance(document, dict):
            return list(document.items()), f"{size} of JSON"
        return [("(body)", document)], f"{size} of JSON"
    return [], f"{size} of {content_type}, not shown"


def _shown(name: str, value: Any, secrets: list[str]) -> str:
    """One value as the admin page shows it: credentials replaced, long text cut."""
    text = _as_text(_redacted(name, value, secrets))
    if len(text) > MAX_SHOWN_CHARS:
        text = text[:MAX_SHOWN_CHARS] + f"… ({len(text) - MAX_SHOWN_CHARS} more characters)"
    return text


def _redacted(name: str, value: Any, secrets: list[str]) -> Any:
    if _SENSITIVE_NAME.search(name):
        return REDACTED
    if name in _HIDDEN_VALUES and isinstance(value, Mapping):
        return {key: REDACTED for key in value}
    if isinstance(value, Mapping):
        return {key: _redacted(str(key), item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [_redacted("", item, secrets) for item in value]
    if isinstance(value, str):
        return _scrubbed(value, secrets)
    return value


def _scrubbed(text: str, secrets: list[str]) -> str:
    # A secret pasted anywhere (a query string, a script) is hidden as well as the named fields.
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False)
