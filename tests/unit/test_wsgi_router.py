"""The router as a WSGI application: what it reads from the environ, how it answers, what it logs."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cheroot.server import ChunkedRFile, KnownLengthRFile

from server_responder.web.http import HttpError, Incoming, Response, Route, Router

TOKEN = "router-token-1234"
LIMIT = 64


@dataclass
class Answer:
    status: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key.lower() == name.lower()), None)

    def json(self):
        return json.loads(self.body)


def environ(method: str = "GET", path: str = "/", query: str = "", body: bytes = b"", *,
            headers: dict[str, str] | None = None, stream=None) -> dict:
    """An environ as cheroot's WSGI 1.0 gateway makes it: latin-1 text, headers as HTTP_*."""
    env = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "SCRIPT_NAME": "",
           "REMOTE_ADDR": "192.0.2.7", "SERVER_PROTOCOL": "HTTP/1.1",
           "REQUEST_URI": path + ("?" + query if query else "")}
    for name, value in (headers or {}).items():
        key = name.upper().replace("-", "_")
        env[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key] = value
    if stream is None:
        length = int(env.get("CONTENT_LENGTH") or 0)
        stream = KnownLengthRFile(io.BytesIO(body), length)
    env["wsgi.input"] = stream
    return env


def call(router: Router, env: dict) -> Answer:
    started = []

    def start_response(status, headers, exc_info=None):
        started.append((status, headers))

    result = router(env, start_response)
    try:
        body = b"".join(result)
    finally:
        result.close()
    (status, headers), = started
    for name, value in headers:
        assert isinstance(name, str) and isinstance(value, str)
        value.encode("latin-1")
    return Answer(status, headers, body)


class Seen:
    """What the echo route was given."""

    incoming: Incoming | None = None


def make_router(seen: Seen | None = None) -> Router:
    seen = seen or Seen()

    def echo(incoming: Incoming) -> dict:
        seen.incoming = incoming
        return {"method": incoming.method, "path": incoming.path, "query": incoming.query,
                "remote": incoming.remote, "agent": incoming.headers.get("user-agent")}

    def read_body(incoming: Incoming) -> dict:
        return {"size": len(incoming.body), "text": incoming.body.decode("latin-1")}

    def item(incoming: Incoming, name: str) -> Response:
        return Response(f"item {name}", content_type="text/plain; charset=utf-8",
                        headers={"X-Item": name, "X-Odd": "a\r\nSet-Cookie: injected=1"})

    def refuse(incoming: Incoming) -> None:
        raise HttpError(409, "conflict", "already there", headers={"Retry-After": "5"})

    def fail(incoming: Incoming) -> None:
        raise RuntimeError("the secret internals")

    routes = [Route("GET", "/echo", echo), Route("POST", "/body", read_body), Route("GET", "/items/{name}", item),
              Route("POST", "/refuse", refuse), Route("GET", "/fail", fail)]
    return Router(routes, TOKEN, LIMIT, cors_origins=["https://allowed.example"])


@pytest.fixture
def access_records() -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("cherrypy.access")
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.INFO
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_method_path_query_headers_and_remote_come_from_the_environ():
    seen = Seen()
    env = environ("GET", "/echo", "wait=10&name=%C3%A9&bad=%ff", headers={"User-Agent": "probe/1",
                                                                          "X-Custom-Thing": "v"})
    answer = call(make_router(seen), env)
    assert answer.status == "200 OK"
    assert answer.json() == {"method": "GET", "path": "/echo", "remote": "192.0.2.7", "agent": "probe/1",
                             "query": {"wait": "10", "name": "é", "bad": "\ufffd"}}
    headers = seen.incoming.headers
    assert headers.get("X-CUSTOM-THING") == headers["x-custom-thing"] == "v"
    assert "user-agent" in headers and "Referer" not in headers and headers.get("Referer") is None
    assert dict(headers.items()) == {"User-Agent": "probe/1", "X-Custom-Thing": "v"}


def test_a_utf8_path_is_read_as_utf8_and_one_that_is_not_matches_no_route():
    seen = Seen()
    router = make_router(seen)
    utf8 = "/items/é".encode().decode("latin-1")
    assert call(router, environ("GET", utf8)).body == "item é".encode()
    answer = call(router, environ("GET", "/items/\xff\xfe/x"))
    assert answer.status == "404 Not Found" and answer.json()["error"] == "not_found"


def test_content_type_and_length_are_headers_too():
    seen = Seen()
    call(make_router(seen), environ("GET", "/echo", headers={"Content-Type": "Application/JSON; charset=utf-8",
                                                              "Content-Length": "0"}))
    assert seen.incoming.content_type == "application/json"
    assert seen.incoming.headers["content-length"] == "0"
    assert dict(seen.incoming.headers).keys() >= {"Content-Type", "Content-Length"}


def test_every_answer_has_a_request_id_and_a_given_one_is_kept_when_it_is_plain():
    router = make_router()
    kept = call(router, environ("GET", "/echo", headers={"X-Request-Id": "abc-123.x_y"}))
    assert kept.header("X-Request-Id") == "abc-123.x_y"
    for env in (environ("GET", "/nowhere"), environ("GET", "/fail"), environ("OPTIONS", "/echo"),
                environ("GET", "/echo", headers={"X-Request-Id": "bad id\u00e9"})):
        given = call(router, env).header("X-Request-Id")
        assert given and len(given) == 16 and given != "abc-123.x_y"


def test_head_answers_the_get_headers_without_a_body():
    router = make_router()
    get = call(router, environ("GET", "/items/a"))
    head = call(router, environ("HEAD", "/items/a"))
    assert head.status == "200 OK" and head.body == b""
    assert head.header("Content-Length") == get.header("Content-Length") == str(len(b"item a"))
    assert head.header("Content-Type") == "text/plain; charset=utf-8"


def test_route_headers_cannot_add_header_lines():
    answer = call(make_router(), environ("GET", "/items/a"))
    assert answer.header("X-Item") == "a"
    assert answer.header("X-Odd") == "aSet-Cookie: injected=1"
    assert answer.header("Set-Cookie") is None


def test_an_http_error_is_json_with_its_headers():
    answer = call(make_router(), environ("POST", "/refuse", headers={"Content-Length": "0"}))
    assert answer.status == "409 Conflict"
    assert answer.header("Content-Type") == "application/json" and answer.header("Retry-After") == "5"
    assert answer.json() == {"error": "conflict", "detail": "already there"}
    assert answer.header("Content-Length") == str(len(answer.body))


def test_wrong_method_is_405_with_allow_and_unknown_path_404():
    router = make_router()
    answer = call(router, environ("DELETE", "/echo"))
    assert answer.status == "405 Method Not Allowed" and answer.header("Allow") == "GET"
    assert call(router, environ("get", "/echo")).status.startswith("405")


def test_preflight_is_204_without_a_media_type_and_with_cors_for_an_allowed_origin():
    router = make_router()
    answer = call(router, environ("OPTIONS", "/items/x", headers={"Origin": "https://allowed.example"}))
    assert answer.status == "204 No Content" and answer.body == b""
    assert answer.header("Content-Type") is None and answer.header("Content-Length") is None
    assert answer.header("Allow") == "GET, OPTIONS"
    assert answer.header("Access-Control-Allow-Origin") == "https://allowed.example"
    assert answer.header("Access-Control-Allow-Methods") == "GET"
    other = call(router, environ("OPTIONS", "/items/x", headers={"Origin": "https://other.example"}))
    assert other.header("Access-Control-Allow-Origin") is None and other.header("Access-Control-Allow-Methods") is None
    assert call(router, environ("OPTIONS", "/nowhere")).status == "404 Not Found"


def test_a_cors_answer_to_an_ordinary_request_names_the_origin():
    answer = call(make_router(), environ("GET", "/echo", headers={"Origin": "https://allowed.example"}))
    assert answer.header("Access-Control-Allow-Origin") == "https://allowed.example"
    assert answer.header("Vary") == "Origin"


def test_a_body_of_its_content_length_is_read():
    body = b'{"a": 1}'
    answer = call(make_router(), environ("POST", "/body", body=body, headers={"Content-Length": str(len(body))}))
    assert answer.json() == {"size": len(body), "text": body.decode()}


def test_a_body_shorter_than_its_content_length_is_a_400():
    env = environ("POST", "/body", headers={"Content-Length": "20"},
                  stream=KnownLengthRFile(io.BytesIO(b"short"), 20))
    answer = call(make_router(), env)
    assert answer.status == "400 Bad Request"
    assert "shorter than its Content-Length" in answer.json()["detail"]


@pytest.mark.parametrize("length, status", [("65", 413), ("-1", 400), ("1e3", 400)])
def test_a_content_length_over_the_limit_or_not_a_number_is_refused_before_reading(length, status):
    class Unread(io.BytesIO):
        def read(self, size=-1):
            raise AssertionError("the body was read")

    answer = call(make_router(), environ("POST", "/body", headers={"Content-Length": length}, stream=Unread()))
    assert int(answer.status[:3]) == status
    assert answer.header("Content-Type") == "application/json"


def chunked(data: bytes) -> ChunkedRFile:
    return ChunkedRFile(io.BytesIO(data), LIMIT)


def test_a_chunked_body_is_read_through_cheroots_reader():
    env = environ("POST", "/body", headers={"Transfer-Encoding": "chunked"},
                  stream=chunked(b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"))
    assert call(make_router(), env).json() == {"size": 7, "text": "abcdefg"}


@pytest.mark.parametrize("data, status, mentions", [
    (b"41\r\n" + b"x" * 65 + b"\r\n0\r\n\r\n", 413, "max_body_bytes"),
    (b"zz\r\nabc\r\n0\r\n\r\n", 400, "chunk"),
    (b"3\r\nabcXX0\r\n\r\n", 400, "chunk"),
])
def test_a_chunked_body_too_large_or_malformed_is_refused(data, status, mentions):
    answer = call(make_router(), environ("POST", "/body", headers={"Transfer-Encoding": "chunked"},
                                         stream=chunked(data)))
    assert int(answer.status[:3]) == status, answer.body
    assert mentions in answer.json()["detail"].lower()


def test_a_body_that_does_not_arrive_in_time_is_a_408():
    class Stalled(io.BytesIO):
        def read(self, size=-1):
            raise TimeoutError("timed out")

    answer = call(make_router(), environ("POST", "/body", headers={"Content-Length": "10"}, stream=Stalled()))
    assert answer.status == "408 Request Timeout"
    assert "request_body_timeout" in answer.json()["detail"]


def test_too_many_query_fields_is_a_400_on_any_route():
    answer = call(make_router(), environ("GET", "/items/a", "&".join(f"p{i}=1" for i in range(1001))))
    assert answer.status == "400 Bad Request" and "more than 1000" in answer.json()["detail"]
    assert answer.header("X-Request-Id")


def test_an_unexpected_exception_is_logged_and_answered_with_a_500_revealing_nothing(caplog):
    with caplog.at_level(logging.ERROR, logger="server_responder.web"):
        answer = call(make_router(), environ("GET", "/fail", headers={"X-Request-Id": "req-500"}))
    assert answer.status == "500 Internal Server Error"
    assert answer.json() == {"error": "internal_error", "detail": "the responder failed; see its log"}
    assert b"secret internals" not in answer.body and b"Traceback" not in answer.body
    record, = [r for r in caplog.records if getattr(r, "event", None) == "http.error"]
    assert record.request_id == "req-500" and record.path == "/fail"
    assert record.exc_info and "the secret internals" in str(record.exc_info[1])


def test_each_request_is_logged_once_it_is_answered(access_records):
    router = make_router()
    env = environ("GET", "/items/a", "token=abc", headers={"User-Agent": 'say "hi"\x01',
                                                           "X-Request-Id": "req-log"})
    started = []
    result = router(env, lambda status, headers: started.append(status))
    assert access_records == [], "logged before the body was written"
    b"".join(result)
    result.close()
    record, = access_records
    assert record.name == "cherrypy.access"
    assert record.getMessage() == "GET /items/a 200"
    assert (record.method, record.path, record.status, record.bytes, record.remote, record.request_id) == (
        "GET", "/items/a", 200, 6, "192.0.2.7", "req-log")
    assert record.user_agent == 'say \\"hi\\"\\x01'
    assert record.duration_ms >= 0
