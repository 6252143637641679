"""A small routing layer on CherryPy: a route table, JSON in and out, errors as JSON, never a traceback."""

from __future__ import annotations

import json
import logging
import re
import secrets
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cherrypy
from cheroot.errors import MaxSizeExceeded

from server_responder import safe_json
from server_responder.signing import tokens_match

log = logging.getLogger("server_responder.web")
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
class Response:
    body: bytes | str | Any
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


class Incoming:
    """The parts of the current request a handler needs, read lazily and bounded."""

    def __init__(self, api_key: str, max_body_bytes: int) -> None:
        request = cherrypy.serving.request
        self.method = request.method
        self.path = request.path_info
        self.headers = request.headers
        self.remote = request.remote.ip
        self.query = _pairs(request.query_string)
        self._api_key = api_key
        self._max_body_bytes = max_body_bytes
        self._body: bytes | None = None
        given = self.headers.get("X-Request-Id", "")
        self.request_id = given if _REQUEST_ID.fullmatch(given) else secrets.token_hex(8)

    @property
    def body(self) -> bytes:
        if self._body is None:
            self._body = _read_body(self._max_body_bytes)
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
            raise HttpError(401, "unauthorized", "a valid API token is required (Authorization: Bearer <token>)",
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


def _read_body(limit: int) -> bytes:
    request = cherrypy.serving.request
    length = request.headers.get("Content-Length")
    if length is not None:
        if not _CONTENT_LENGTH.fullmatch(length):
            raise HttpError(400, "bad_request", "Content-Length: must be a number of bytes")
        if int(length) > limit:
            raise _too_large(limit)
    if not request.body or request.body.fp is None:
        return b""
    try:
        data = request.body.fp.read(limit + 1) if length is None else request.body.fp.read(int(length))
    except TimeoutError:
        raise HttpError(408, "request_timeout", "body: not received in time (request_body_timeout)") from None
    except MaxSizeExceeded:
        raise _too_large(limit) from None
    except ValueError as error:
        # cheroot's reader of chunked bodies says what is malformed.
        raise HttpError(400, "bad_request", f"body: {error}", field="body") from None
    except OSError as error:
        if "Too Large" in str(error):
            raise _too_large(limit) from None
        raise HttpError(400, "bad_request", "body: the connection broke while it was read", field="body") from None
    if len(data) > limit:
        raise _too_large(limit)
    if length is not None and len(data) < int(length):
        raise HttpError(400, "bad_request", f"body: {len(data)} bytes, shorter than its Content-Length ({length})",
                        field="body")
    return data


def _too_large(limit: int) -> HttpError:
    return HttpError(413, "payload_too_large", f"body: larger than max_body_bytes ({limit} bytes)", field="body")


def json_body(data: Any) -> bytes:
    return json.dumps(data, indent=None, separators=(",", ":")).encode()


def error_document(error: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"error": error, "detail": detail, **{k: v for k, v in extra.items() if v is not None}}


class Router:
    """The root object CherryPy dispatches every path to; it picks the route itself."""

    def __init__(self, routes: Iterable[Route], api_key: str, max_body_bytes: int,
                 cors_origins: Iterable[str] = ()) -> None:
        self.routes = list(routes)
        self._api_key = api_key
        self._max_body_bytes = max_body_bytes
        self._cors_origins = frozenset(cors_origins)

    @cherrypy.expose
    def default(self, /, *_segments: str, **_params: str) -> bytes:
        # Positional-only: a query parameter named `self` is just a parameter.
        try:
            incoming = Incoming(self._api_key, self._max_body_bytes)
        except HttpError as error:
            return self._render_error(error)
        cherrypy.serving.response.headers["X-Request-Id"] = incoming.request_id
        cherrypy.serving.request.request_id = incoming.request_id
        self._allow_origin(incoming)
        try:
            if incoming.method == "OPTIONS":
                return self._preflight(incoming)
            return self._render(self._dispatch(incoming))
        except HttpError as error:
            return self._render_error(error)

    index = default

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

    def _allow_origin(self, incoming: Incoming) -> None:
        origin = incoming.headers.get("Origin")
        if origin and origin in self._cors_origins:
            headers = cherrypy.serving.response.headers
            headers["Access-Control-Allow-Origin"] = origin
            headers["Vary"] = "Origin"

    def _preflight(self, incoming: Incoming) -> bytes:
        methods = sorted({r.method for r in self.routes if r.match(incoming.path) is not None})
        if not methods:
            raise HttpError(404, "not_found", f"no route for {incoming.path}")
        response = cherrypy.serving.response
        response.status = 204
        # An empty answer has no media type; CherryPy would call it text/html.
        response.headers.pop("Content-Type", None)
        response.headers["Allow"] = ", ".join(methods + ["OPTIONS"])
        if "Access-Control-Allow-Origin" in response.headers:
            response.headers["Access-Control-Allow-Methods"] = ", ".join(methods)
            response.headers["Access-Control-Allow-Headers"] = "Content-Type, Authorization, X-Request-Id"
            response.headers["Access-Control-Max-Age"] = "600"
        return b""

    def _render(self, result: Any) -> bytes:
        response = cherrypy.serving.response
        if not isinstance(result, Response):
            result = Response(result)
        response.status = result.status
        response.headers["Content-Type"] = result.content_type
        response.headers.update(result.headers)
        if isinstance(result.body, bytes):
            return result.body
        if isinstance(result.body, str):
            return result.body.encode()
        return json_body(result.body)

    def _render_error(self, error: HttpError) -> bytes:
        response = cherrypy.serving.response
        response.status = error.status
        response.headers["Content-Type"] = "application/json"
        response.headers.update(error.headers)
        return json_body(error_document(error.error, error.detail, **error.extra))


_STATUS_ERRORS = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                  405: "method_not_allowed", 408: "request_timeout", 411: "length_required",
                  413: "payload_too_large", 414: "uri_too_long", 415: "unsupported_media_type",
                  431: "request_header_fields_too_large", 500: "internal_error", 503: "service_unavailable"}


def status_error(status: int) -> str:
    """The `error` word of a status the router or the HTTP server answers with."""
    return _STATUS_ERRORS.get(status, "error")


def json_error_page(status: str, message: str, traceback: str, version: str) -> str:
    """CherryPy's own errors (bad requests it rejects before routing) as JSON, without tracebacks."""
    code = int(str(status).split()[0])
    cherrypy.serving.response.headers["Content-Type"] = "application/json"
    return json.dumps(error_document(status_error(code), message))


def json_unexpected_error() -> None:
    """A fault of ours: logged with its traceback, answered with a plain 500 that reveals nothing."""
    log.error("unhandled error", exc_info=True, extra={
        "event": "http.error", "path": cherrypy.serving.request.path_info,
        "request_id": getattr(cherrypy.serving.request, "request_id", None)})
    response = cherrypy.serving.response
    response.status = 500
    response.headers["Content-Type"] = "application/json"
    response.body = [json_body(error_document("internal_error", "the responder failed; see its log"))]
