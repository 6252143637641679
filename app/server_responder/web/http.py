"""A small routing layer as a WSGI application: a route table, JSON in and out, errors as JSON, never a
traceback. CherryPy's server runs it; CherryPy's own request handling stays out of the way."""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from http import HTTPStatus
from typing import Any, BinaryIO

from cheroot.errors import MaxSizeExceeded

from server_responder import safe_json
from server_responder.logging_setup import ACCESS_LOGGER
from server_responder.signing import tokens_match

log = logging.getLogger("server_responder.web")
access_log = logging.getLogger(ACCESS_LOGGER)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_FORM_TYPE = "application/x-www-form-urlencoded"
_CONTENT_LENGTH = re.compile(r"[0-9]{1,18}")
MAX_QUERY_FIELDS = 1000


class HttpError(Exception):
    """An answer other than success: rendered as JSON `{"error": ..., "detail": ...}`."""

    def __init__(self, status: int, error: str, detail: str = "", headers: Mapping[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(detail or error)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra


@dataclass
class Streamed:
    """A body sent as it is made, chunk by chunk, with no Content-Length; `close` runs however it ends."""

    chunks: Iterator[bytes]
    close: Callable[[], None] = lambda: None


@dataclass
class Response:
    body: bytes | str | Streamed | Any
    status: int = 200
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str
    handler: Callable[..., Any]
    summary: str = ""

    def match(self, path: str) -> dict[str, str] | None:
        return _match(self.pattern, path)


def _match(pattern: str, path: str) -> dict[str, str] | None:
    wanted = [s for s in pattern.split("/") if s]
    given = [s for s in path.split("/") if s]
    params: dict[str, str] = {}
    for index, segment in enumerate(wanted):
        if segment.startswith("{") and segment.endswith(":path}"):
            rest = given[index:]
            if not rest:
                return None
            params[segment[1:-len(":path}")]] = "/".join(rest)
            return params
        if index >= len(given):
            return None
        if segment.startswith("{") and segment.endswith("}"):
            params[segment[1:-1]] = urllib.parse.unquote(given[index])
        elif segment != given[index]:
            return None
    return params if len(given) == len(wanted) else None


class RequestHeaders(Mapping[str, str]):
    """A request's headers, read from the WSGI environ by name, in any case; listed in Title-Case."""

    __slots__ = ("_environ",)

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self._environ = environ

    def __getitem__(self, name: str) -> str:
        value = self._environ.get(_environ_key(name))
        if value is None:
            raise KeyError(name)
        return value

    def get(self, name: str, default: Any = None) -> Any:
        return self._environ.get(_environ_key(name), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _environ_key(name) in self._environ

    def __iter__(self) -> Iterator[str]:
        for key in self._environ:
            if key.startswith("HTTP_"):
                yield key[5:].replace("_", "-").title()
            elif key in _UNPREFIXED_HEADERS:
                yield _UNPREFIXED_HEADERS[key]

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def copied(self) -> RequestHeaders:
        """The same headers over a copy of the environ's header entries only."""
        return RequestHeaders({key: value for key, value in self._environ.items()
                               if key.startswith("HTTP_") or key in _UNPREFIXED_HEADERS})


# The two headers PEP 3333 names without the HTTP_ prefix.
_UNPREFIXED_HEADERS = {"CONTENT_TYPE": "Content-Type", "CONTENT_LENGTH": "Content-Length"}


def _environ_key(name: str) -> str:
    key = name.upper().replace("-", "_")
    return key if key in _UNPREFIXED_HEADERS else "HTTP_" + key


def _recoded(path: str, query: str) -> tuple[str, str]:
    """PATH_INFO and QUERY_STRING arrive as latin-1 (PEP 3333); read as UTF-8 when both are, as they are
    kept otherwise (a path that is not UTF-8 then matches no route; the query's fields replace bad bytes)."""
    if path.isascii() and query.isascii():
        return path, query
    try:
        return path.encode("latin-1").decode("utf-8"), query.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return path, query


class Incoming:
    """The parts of the current request a handler needs, read lazily and bounded."""

    def __init__(self, environ: Mapping[str, Any], api_key: str, max_body_bytes: int) -> None:
        self.method: str = environ["REQUEST_METHOD"]
        self.path, self._query_string = _recoded(environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", ""))
        self.headers = RequestHeaders(environ)
        self.remote: str = environ.get("REMOTE_ADDR") or ""
        self._input: BinaryIO | None = environ.get("wsgi.input")
        self._api_key = api_key
        self._max_body_bytes = max_body_bytes
        self._body: bytes | None = None
        given = self.headers.get("X-Request-Id", "")
        self.request_id = given if _REQUEST_ID.fullmatch(given) else secrets.token_hex(8)

    @cached_property
    def query(self) -> dict[str, str]:
        return _pairs(self._query_string)

    @property
    def body(self) -> bytes:
        return self.body_within(self._max_body_bytes, "max_body_bytes")

    def body_within(self, limit: int, setting: str) -> bytes:
        """The body, refused with 413 naming `setting` when it is larger than `limit`."""
        if self._body is None:
            self._body = _read_body(self._input, self.headers.get("Content-Length"), limit, setting)
        return self._body

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0].strip().lower()

    def form(self) -> dict[str, str]:
        """Query string and, for a urlencoded body, the form fields."""
        fields = dict(self.query)
        if self.method in ("POST", "PUT", "PATCH") and self.content_type == _FORM_TYPE:
            fields.update(_pairs(self.body.decode("utf-8", errors="replace")))
        return fields

    def json(self) -> Any:
        if not self.body.strip():
            raise HttpError(400, "bad_request", "body: a JSON object is required", field="body")
        try:
            return safe_json.loads(self.body)
        except safe_json.UnsafeJson as error:
            raise HttpError(400, "bad_request", f"body: {error}", field="body") from None

    def bearer_token(self) -> str | None:
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None

    def has_token(self, *, form_token: str | None = None) -> bool:
        """Whether the caller presented the API token (constant-time comparison)."""
        given = self.bearer_token() or form_token
        return tokens_match(self._api_key, given)

    def require_token(self) -> None:
        if not self.has_token():
            detail = ("Authorization: the bearer token does not match this responder's API token"
                      if self.bearer_token() is not None
                      else "a valid API token is required (Authorization: Bearer <token>)")
            raise HttpError(401, "unauthorized", detail,
                            headers={"WWW-Authenticate": 'Bearer realm="server-responder"'})

    def number_param(self, name: str, default: float, maximum: float) -> float:
        raw = self.query.get(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise HttpError(400, "bad_request", f"{name}: must be a number", field=name) from None
        if not 0 <= value <= maximum:
            raise HttpError(400, "bad_request", f"{name}: must be between 0 and {maximum:g}", field=name)
        return value


def _pairs(text: str) -> dict[str, str]:
    try:
        return dict(urllib.parse.parse_qsl(text or "", keep_blank_values=True, max_num_fields=MAX_QUERY_FIELDS))
    except ValueError:
        raise HttpError(400, "bad_request", f"query or form: more than {MAX_QUERY_FIELDS} fields") from None


def _read_body(stream: BinaryIO | None, length: str | None, limit: int, setting: str) -> bytes:
    """The body from wsgi.input: cheroot's reader of a Content-Length body, or of chunks (when there is no
    Content-Length), which refuses more than max_request_body_size."""
    if length is not None:
        if not _CONTENT_LENGTH.fullmatch(length):
            raise HttpError(400, "bad_request", "Content-Length: must be a number of bytes")
        if int(length) > limit:
            raise _too_large(limit, setting)
    if stream is None:
        return b""
    try:
        data = stream.read(limit + 1) if length is None else stream.read(int(length))
    except TimeoutError:
        raise HttpError(408, "request_timeout", "body: not received in time (request_body_timeout)") from None
    except MaxSizeExceeded:
        raise _too_large(limit, setting) from None
    except ValueError as error:
        # cheroot's reader of chunked bodies says what is malformed.
        raise HttpError(400, "bad_request", f"body: {error}", field="body") from None
    except OSError as error:
        if "Too Large" in str(error):
            raise _too_large(limit, setting) from None
        raise HttpError(400, "bad_request", "body: the connection broke while it was read", field="body") from None
    if len(data) > limit:
        raise _too_large(limit, setting)
    if length is not None and len(data) < int(length):
        raise HttpError(400, "bad_request", f"body: {len(data)} bytes, shorter than its Content-Length ({length})",
                        field="body")
    return data


def _too_large(limit: int, setting: str) -> HttpError:
    return HttpError(413, "payload_too_large", f"body: larger than {setting} ({limit} bytes)", field="body")


def json_body(data: Any) -> bytes:
    return json.dumps(data, indent=None, separators=(",", ":")).encode()


def error_document(error: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"error": error, "detail": detail, **{k: v for k, v in extra.items() if v is not None}}


class Router:
    """The WSGI application serving every path: it picks the route, renders the answer and logs the request."""

    def __init__(self, routes: Iterable[Route], api_key: str, max_body_bytes: int,
                 cors_origins: Iterable[str] = ()) -> None:
        self.routes = list(routes)
        self._api_key = api_key
        self._max_body_bytes = max_body_bytes
        self._cors_origins = frozenset(cors_origins)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> _SentBody:
        started = time.perf_counter()
        incoming = Incoming(environ, self._api_key, self._max_body_bytes)
        try:
            status, headers, body = self._answer(incoming)
        except Exception:
            status, headers, body = self._unexpected_error(incoming)
        if status >= 200 and status not in (204, 205, 304) and not isinstance(body, Streamed):
            headers.append(("Content-Length", str(len(body))))
        if incoming.method == "HEAD":
            if isinstance(body, Streamed):
                body.close()
            body = b""
        start_response(_status_line(status), headers)
        return _SentBody(body, lambda: _log_access(environ, incoming, status, headers, started))

    def _answer(self, incoming: Incoming) -> tuple[int, list[tuple[str, str]], bytes | Streamed]:
        fields = {"X-Request-Id": incoming.request_id}
        self._allow_origin(incoming, fields)
        try:
            incoming.query  # noqa: B018 - every route refuses a query string that cannot be parsed
            if incoming.method == "OPTIONS":
                return self._preflight(incoming, fields)
            result = self._dispatch(incoming)
        except HttpError as error:
            return _rendered(error.status, "application/json", fields, error.headers,
                             json_body(error_document(error.error, error.detail, **error.extra)))
        if not isinstance(result, Response):
            result = Response(result)
        body = result.body
        if isinstance(body, Streamed):
            return _rendered(result.status, result.content_type, fields, result.headers, body)
        if isinstance(body, str):
            body = body.encode()
        elif not isinstance(body, bytes):
            body = json_body(body)
        return _rendered(result.status, result.content_type, fields, result.headers, body)

    def _dispatch(self, incoming: Incoming) -> Any:
        method = "GET" if incoming.method == "HEAD" else incoming.method
        allowed = []
        for route in self.routes:
            params = route.match(incoming.path)
            if params is None:
                continue
            if route.method == method:
                return route.handler(incoming, **params)
            allowed.append(route.method)
        if allowed:
            raise HttpError(405, "method_not_allowed", f"{incoming.method} is not allowed on {incoming.path}",
                            headers={"Allow": ", ".join(sorted(set(allowed)))})
        raise HttpError(404, "not_found", f"no route for {incoming.path}")

    def _allow_origin(self, incoming: Incoming, fields: dict[str, str]) -> None:
        origin = incoming.headers.get("Origin")
        if origin and origin in self._cors_origins:
            fields["Access-Control-Allow-Origin"] = origin
            fields["Vary"] = "Origin"

    def _preflight(self, incoming: Incoming, fields: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
        methods = sorted({r.method for r in self.routes if r.match(incoming.path) is not None})
        if not methods:
            raise HttpError(404, "not_found", f"no route for {incoming.path}")
        # An empty answer has no media type.
        fields["Allow"] = ", ".join(methods + ["OPTIONS"])
        if "Access-Control-Allow-Origin" in fields:
            fields["Access-Control-Allow-Methods"] = ", ".join(methods)
            fields["Access-Control-Allow-Headers"] = "Content-Type, Authorization, X-Request-Id"
            fields["Access-Control-Max-Age"] = "600"
        return 204, _header_list(fields), b""

    def _unexpected_error(self, incoming: Incoming) -> tuple[int, list[tuple[str, str]], bytes]:
        """A fault of ours: logged with its traceback, answered with a plain 500 that reveals nothing."""
        log.error("unhandled error", exc_info=True, extra={
            "event": "http.error", "path": incoming.path, "request_id": incoming.request_id})
        body = json_body(error_document("internal_error", "the responder failed; see its log"))
        return _rendered(500, "application/json", {"X-Request-Id": incoming.request_id}, {}, body)


def _rendered(status: int, content_type: str, fields: dict[str, str], extra: Mapping[str, str],
              body: bytes | Streamed) -> tuple[int, list[tuple[str, str]], bytes | Streamed]:
    return status, _header_list({"Content-Type": content_type, **fields, **extra}), body


def _header_list(fields: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(name, _header_value(value)) for name, value in fields.items()]


# Control characters would end a header line early: removed, as CherryPy did, so no value can add a header.
_CONTROL_CHARACTERS = dict.fromkeys([*range(32), 127])


def _header_value(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    if text.isascii() and text.isprintable():
        return text
    # PEP 3333: header values are bytes, as latin-1 text; anything else is sent as UTF-8.
    return text.translate(_CONTROL_CHARACTERS).encode("utf-8").decode("latin-1")


_STATUS_LINES = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}


def _status_line(status: int) -> str:
    return _STATUS_LINES.get(status) or f"{status} {status_error(status).replace('_', ' ').title()}"


class _SentBody:
    """The answer's body for cheroot to write; cheroot closes it once written (or once the client has gone, for
    a streamed one), and that logs the request."""

    __slots__ = ("_body", "_on_close")

    def __init__(self, body: bytes | Streamed, on_close: Callable[[], None]) -> None:
        self._body = body
        self._on_close = on_close

    def __iter__(self) -> Iterator[bytes]:
        if isinstance(self._body, Streamed):
            return self._body.chunks
        return iter((self._body,))

    def close(self) -> None:
        try:
            if isinstance(self._body, Streamed):
                self._body.close()
        finally:
            self._on_close()


def _log_access(environ: Mapping[str, Any], incoming: Incoming, status: int, headers: list[tuple[str, str]],
                started: float) -> None:
    size = next((value for name, value in headers if name == "Content-Length"), "0")
    log_access(incoming.method, incoming.path, status, int(size), remote=incoming.remote,
               request_id=incoming.request_id, duration_ms=(time.perf_counter() - started) * 1000,
               user_agent=incoming.headers.get("User-Agent", ""))


def log_access(method: str, path: str, status: int, size: int, *, remote: str, request_id: str,
               duration_ms: float, user_agent: str = "") -> None:
    """One line per answered request, as fields; the logging filter masks secrets in them."""
    method, path = _printable(method), _printable(path)
    access_log.info(f"{method} {path} {status}", extra={
        "event": "http.request", "method": method, "path": path, "status": status, "bytes": size,
        "duration_ms": round(duration_ms, 3), "request_id": request_id, "remote": remote,
        "user_agent": _printable(user_agent)})


def _printable(text: str) -> str:
    # As CherryPy's access log did: control characters, quotes and backslashes escaped, then what is not ASCII.
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return text.translate(_ESCAPES).encode("ascii", "backslashreplace").decode("ascii")


_ESCAPES = {**{code: f"\\x{code:02x}" for code in [*range(32), 127]}, ord('"'): '\\"', ord("\\"): "\\\\"}


_STATUS_ERRORS = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                  405: "method_not_allowed", 408: "request_timeout", 411: "length_required",
                  413: "payload_too_large", 414: "uri_too_long", 415: "unsupported_media_type",
                  431: "request_header_fields_too_large", 500: "internal_error", 503: "service_unavailable"}


def status_error(status: int) -> str:
    """The `error` word of a status the router or the HTTP server answers with."""
    return _STATUS_ERRORS.get(status, "error")
