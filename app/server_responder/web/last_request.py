"""The last job-submitting request, for the admin page: kept as it came, shown with every credential redacted."""

from __future__ import annotations

import json
import logging
import re
import time
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
    """Keeps the most recent request it is given; redacted once, when it is first read (most requests are
    never shown, and each submission would otherwise pay for it)."""

    def __init__(self, secrets: Callable[[], Iterable[str]] = tuple) -> None:
        self._secrets = secrets
        # The latest request as it came, and its redacted record once made: replaced whole, so a reader on
        # another thread sees one request or the next, never a mix.
        self._latest: tuple[_Received, list[RecordedRequest | None]] | None = None

    @property
    def last(self) -> RecordedRequest | None:
        latest = self._latest
        if latest is None:
            return None
        received, redacted = latest
        if redacted[0] is None:
            try:
                redacted[0] = redacted_request(received, received.body,
                                               [s for s in self._secrets() if s], received.moment)
            except Exception:
                # The admin page's view of a request must never break the page.
                log.warning("request not recorded", exc_info=True, extra={"event": "admin.record_failed"})
                return None
        return redacted[0]

    def record(self, incoming: RequestLike) -> None:
        """Remember `incoming`; reading its body raises only what the handler reading it would raise."""
        body = incoming.body
        self._latest = (_Received(incoming, body), [None])


class _Received:
    """What redacting a request reads of it, copied as it came: the request itself is not kept."""

    __slots__ = ("moment", "method", "path", "remote", "request_id", "headers", "query", "content_type", "body")

    def __init__(self, incoming: RequestLike, body: bytes) -> None:
        self.moment = time.time()
        self.method = incoming.method
        self.path = incoming.path
        self.remote = incoming.remote
        self.request_id = incoming.request_id
        copied = getattr(incoming.headers, "copied", None)
        self.headers: Mapping[str, str] = copied() if copied is not None else dict(incoming.headers)
        self.query = dict(incoming.query)
        self.content_type = incoming.content_type
        self.body = body


def redacted_request(incoming: RequestLike, body: bytes, secrets: list[str],
                     moment: float | None = None) -> RecordedRequest:
    fields, note = _body_fields(incoming.content_type, body)
    received = datetime.fromtimestamp(time.time() if moment is None else moment, timezone.utc)
    return RecordedRequest(
        received_at=received.isoformat(timespec="seconds").replace("+00:00", "Z"),
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
