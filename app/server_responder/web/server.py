"""The HTTP server: CherryPy's cheroot, made safe to face the network.

- A request's line and headers are gathered by the connection selector, without a worker thread, so clients
  that send headers slowly (or never) cannot occupy the threads; a worker gets the connection once the
  headers are complete. Headers must arrive within `request_header_timeout`, a body within
  `request_body_timeout` (each read also waits at most `socket_timeout`).
- Each client address may hold `max_connections_per_client` connections; more are answered 503 at once.
- Everything cheroot answers by itself (malformed framing, oversized headers, timeouts) is JSON of the same
  shape as the application's errors, and no response names the server software's version.
"""

from __future__ import annotations

import os
import secrets
import select
import socket
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus

import cherrypy
from cheroot import errors
from cheroot.makefile import MakeFile, StreamReader
from cheroot.makefile import io as buffered_io
from cheroot.server import HeaderReader, HTTPConnection, KnownLengthRFile
from cherrypy._cpwsgi_server import CPWSGIHTTPRequest, CPWSGIServer

from server_responder.web.http import error_document, json_body, log_access, status_error

SERVER_NAME = "server-responder"
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADER_COUNT = 100
# Headers that must appear at most once: two of them make the request's framing or target ambiguous.
_SINGLE_HEADERS = (b"content-length", b"transfer-encoding", b"host")
_DIGITS = frozenset(b"0123456789")
# RFC 9110's token characters: a field name is one of these runs, and nothing stands between it and its colon.
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float
    body_timeout: float
    per_client: int  # 0: no bound


class TooManyHeaders(errors.MaxSizeExceeded):
    """More header lines than MAX_HEADER_COUNT."""


class _RequestStream(socket.SocketIO):
    """The connection's socket as a raw stream: bytes gathered ahead are served first, and each read waits at
    most until the current deadline (and at most the idle timeout)."""

    def __init__(self, sock: socket.socket, idle_timeout: float) -> None:
        super().__init__(sock, "rb")
        self.read_ahead = bytearray()
        self.deadline: float | None = None
        self.idle_timeout = idle_timeout
        self.timed_out = False
        # Bytes the current request may still read from the socket; None between requests.
        self.budget: int | None = None

    def readinto(self, buffer) -> int | None:
        if self.read_ahead:
            count = min(len(buffer), len(self.read_ahead))
            buffer[:count] = self.read_ahead[:count]
            del self.read_ahead[:count]
            return count
        if self.budget is not None and self.budget < 0:
            raise errors.MaxSizeExceeded("the request is larger than its limits")
        if self.deadline is None:
            return self._counted(super().readinto(buffer))
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            self.timed_out = True
            raise TimeoutError("timed out")
        self._sock.settimeout(min(self.idle_timeout, remaining))
        try:
            return self._counted(super().readinto(buffer))
        except TimeoutError:
            self.timed_out = True
            raise
        finally:
            self._sock.settimeout(self.idle_timeout)

    def _read_without_waiting(self, limit: int) -> bytes:
        timeout = self._sock.gettimeout()
        self._sock.settimeout(0)
        try:
            return self._sock.recv(limit)
        finally:
            self._sock.settimeout(timeout)

    def _counted(self, count: int | None) -> int | None:
        if count and self.budget is not None:
            self.budget -= count
        return count

    def gather(self, limit: int) -> int | None:
        """Read what has arrived, without waiting, into `read_ahead`: bytes read, 0 at end of stream, None if
        nothing was there."""
        try:
            if type(self._sock) is socket.socket and self._sock.gettimeout():
                # A plain socket with a timeout does not block underneath: a read returns what is there, without
                # the wait for readiness its recv makes first, or the two calls of setting a timeout of 0 and back.
                data = os.read(self._sock.fileno(), limit)
            else:
                data = self._read_without_waiting(limit)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return 0
        self.read_ahead += data
        return len(data)


class _RequestReader(StreamReader):
    """cheroot's buffered socket reader, over a _RequestStream."""

    def __init__(self, stream: _RequestStream, bufsize: int) -> None:
        buffered_io.BufferedReader.__init__(self, stream, bufsize)
        self.bytes_read = 0


class _CheckedHeaderReader(HeaderReader):
    """cheroot's header parsing, refusing what would make a request ambiguous or unbounded: too many lines,
    repeated framing headers, a Content-Length that is not plain digits, Content-Length with
    Transfer-Encoding, a transfer coding other than chunked, and an HTTP/1.1 request without Host."""

    def __init__(self, request: ResponderRequest) -> None:
        self.request = request

    def __call__(self, rfile, hdict=None):
        lines = _CountedHeaderLines(rfile)
        headers = super().__call__(lines, hdict)
        length = headers.get(b"Content-Length")
        if length is not None and not (0 < len(length) <= 18 and set(length) <= _DIGITS):
            raise ValueError("Content-Length: must be a number of bytes")
        coding = headers.get(b"Transfer-Encoding")
        if coding is not None:
            if length is not None:
                raise ValueError("Content-Length and Transfer-Encoding: a request may have only one of them")
            if coding.strip().lower() != b"chunked" or self.request.request_protocol != b"HTTP/1.1":
                raise ValueError("Transfer-Encoding: only chunked, on HTTP/1.1, is supported")
        if self.request.request_protocol == b"HTTP/1.1" and not headers.get(b"Host"):
            raise ValueError("Host: HTTP/1.1 requires a Host header")
        return headers


class _CountedHeaderLines:
    """The header block's lines as HeaderReader reads them, counted, with repeated framing headers refused."""

    def __init__(self, rfile) -> None:
        self.rfile = rfile
        self.count = 0
        self.seen: set[bytes] = set()

    def readline(self, size=None) -> bytes:
        line = self.rfile.readline()
        self.count += 1
        if self.count > MAX_HEADER_COUNT + 1:
            raise TooManyHeaders(f"more than {MAX_HEADER_COUNT} header fields")
        if b"\0" in line:
            raise ValueError("header field: NUL is not allowed")
        if line not in (b"\r\n", b"\n") and line[:1] not in (b" ", b"\t"):
            raw_name, colon, _ = line.partition(b":")
            # "Host : x" is read as Host by some servers and not by others: refused, as RFC 9112 says.
            if colon and not (raw_name and _TOKEN.issuperset(raw_name)):
                raise ValueError("header field: its name must be a token followed directly by a colon")
        name = line.partition(b":")[0].strip().lower()
        if name in _SINGLE_HEADERS:
            if name in self.seen:
                raise ValueError(f"{name.decode().title()}: given more than once")
            self.seen.add(name)
        return line


# cheroot's own statuses that the service answers differently: a request in a version or coding it does not
# speak is the client's mistake.
_STATUS_INSTEAD = {501: 400, 505: 400}


def error_response(status: int, detail: str, extra_headers: tuple[str, ...] = ()) -> tuple[bytes, int]:
    """A complete JSON error response that closes the connection, and the size of its body."""
    body = json_body(error_document(status_error(status), detail))
    head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "Content-Type: application/json",
            f"Content-Length: {len(body)}", f"Server: {SERVER_NAME}", "Connection: close", *extra_headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body, len(body)


def _log_refusal(method: bytes | str | None, path: bytes | str | None, status: int, size: int,
                 remote: object, started: float) -> None:
    """The access line of a request the server answers itself, of the same fields as the routes' lines."""
    def text(value: bytes | str | None) -> str:
        return value.decode("latin-1") if isinstance(value, bytes) else (value or "")

    log_access(text(method) or "-", text(path) or "-", status, size, remote=str(remote or ""),
               request_id=secrets.token_hex(8), duration_ms=(time.monotonic() - started) * 1000)


class _HeldWrite:
    """Takes what cheroot writes of a header block, for it to be sent with the body."""

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


# The most of an unread body read before closing: what a proxy in front passes to /github (the appliance's
# nginx: 27m), with room.
_DRAIN_MAX_BYTES = 32 * 1024 * 1024


class ResponderRequest(CPWSGIHTTPRequest):
    """cheroot's request, with the header checks above, deadlines and JSON errors."""

    def __init__(self, server, conn) -> None:
        super().__init__(server, conn)
        self.header_reader = _CheckedHeaderReader(self)
        self.request_protocol = b""
        self._held_head = b""

    def parse_request(self) -> None:
        stream = self.conn.stream
        limits = self.server.limits
        self.started = time.monotonic()
        stream.deadline = self.conn.header_deadline or self.started + limits.header_timeout
        # Chunk-size lines are read whole: the budget bounds them with the body.
        stream.budget = MAX_HEADER_BYTES + self.server.max_request_body_size + 64 * 1024
        super().parse_request()
        if self.ready:
            stream.deadline = time.monotonic() + limits.body_timeout
            # Unread chunks or trailers are not worth resynchronising the stream for.
            if self.chunked_read:
                self.close_connection = True

    def read_request_headers(self) -> bool:
        try:
            return super().read_request_headers()
        except errors.MaxSizeExceeded as error:
            detail = str(error) or f"the header block is larger than {MAX_HEADER_BYTES} bytes"
            self.simple_response("431 Request Header Fields Too Large", f"headers: {detail}")
            return False

    def send_headers(self) -> None:
        # A body that timed out or broke leaves the stream unusable: answer, then close.
        if self.conn.stream.timed_out:
            self.close_connection = True
        # The header block waits for the body's first bytes, so that a whole answer is one send; a chunked
        # one is written as it comes (its last chunk is written past `write`).
        wfile, self.conn.wfile = self.conn.wfile, _HeldWrite()
        try:
            super().send_headers()
        finally:
            held, self.conn.wfile = self.conn.wfile, wfile
        self._held_head = held.data
        if self.chunked_write:
            self._send_held_head()

    def write(self, chunk) -> None:
        if self._held_head and not self.chunked_write:
            chunk, self._held_head = self._held_head + chunk, b""
        else:
            self._send_held_head()
        super().write(chunk)

    def respond(self) -> None:
        try:
            super().respond()
        finally:
            self._send_held_head()  # an answer without a body
        if self.close_connection:
            self._drain_body()

    def _drain_body(self) -> None:
        """Read what is left of a body answered without (a refused webhook, one over the route's limit) before the
        connection closes: closed with unread data, the socket is reset, and a proxy still sending the body loses
        the answer (nginx's 502 page). Bounded by the body's declared length, at most _DRAIN_MAX_BYTES, and by
        the body deadline; a chunked body is not read."""
        body = getattr(self, "rfile", None)
        if not isinstance(body, KnownLengthRFile):
            declared = getattr(self, "inheaders", {}).get(b"Content-Length", b"0")
            if self.chunked_read or not declared.isdigit() or not 0 < int(declared) <= _DRAIN_MAX_BYTES:
                return
            body = self.rfile = KnownLengthRFile(self.conn.rfile, int(declared))
        if body.remaining <= 0:
            return
        # A body over the route's limit is read past the request's budget: only to be dropped.
        self.conn.stream.budget = body.remaining + 64 * 1024
        try:
            while body.remaining > 0 and body.read(min(body.remaining, 64 * 1024)):
                pass
        except (OSError, errors.MaxSizeExceeded):
            pass  # gone or too slow: nothing more to be careful of

    def _send_held_head(self) -> None:
        held, self._held_head = self._held_head, b""
        if held:
            self.conn.wfile.write(held)

    def simple_response(self, status, msg="") -> None:
        self._send_held_head()
        code = int(str(status)[:3])
        detail = msg if isinstance(msg, str) else msg.decode("latin-1")
        if code == 505:
            detail = "HTTP version: only HTTP/1.0 and HTTP/1.1 are served"
        elif code == 413:
            detail = (f"body: larger than {self.server.max_request_body_size} bytes, the most any route takes "
                      "(max_body_bytes, or max_webhook_body_bytes on /github)")
        code = _STATUS_INSTEAD.get(code, code)
        self.close_connection = True
        response, size = error_response(code, detail or HTTPStatus(code).phrase)
        _log_refusal(getattr(self, "method", None), getattr(self, "path", None), code, size,
                     self.conn.remote_addr, getattr(self, "started", time.monotonic()))
        try:
            self.conn.wfile.write(response)
        except OSError as error:
            if error.args[0] not in errors.socket_errors_to_ignore:
                raise
        else:
            self._drain_body()  # a body over the limit, say, refused before it was read


class ResponderConnection(HTTPConnection):
    RequestHandlerClass = ResponderRequest

    def __init__(self, server, sock, makefile=MakeFile) -> None:
        super().__init__(server, sock, makefile)
        self.rfile.close()  # the reader cheroot made; ours reads through the stream below
        self.stream = _RequestStream(sock, server.timeout)
        self.rfile = _RequestReader(self.stream, self.rbufsize)
        self.header_deadline: float | None = None
        self._scanned = 0
        self.admitted = False
        self.counted_as: str | None = None
        self._closed = False

    def gather_headers(self) -> str:
        """Called by the selector: "ready" when the header block is complete (or too large, or the client
        stopped sending, for cheroot to answer), "waiting", "late" past the header deadline, "gone"."""
        now = time.monotonic()
        if self.header_deadline is None:
            self.header_deadline = now + self.server.limits.header_timeout
        elif now >= self.header_deadline:
            return "late"
        ahead = self.stream.read_ahead
        got = self.stream.gather(MAX_HEADER_BYTES + 1 - len(ahead))
        if got == 0:
            return "ready" if ahead else "gone"
        start = max(0, self._scanned - 3)
        self._scanned = len(ahead)
        if ahead.find(b"\n\r\n", start) >= 0 or ahead.find(b"\n\n", start) >= 0 or len(ahead) > MAX_HEADER_BYTES:
            return "ready"
        return "waiting"

    def communicate(self) -> bool:
        try:
            return super().communicate()
        finally:
            # Between requests the selector watches the connection, under the idle timeout.
            self.stream.deadline = None
            self.stream.budget = None
            self.header_deadline = None
            self._scanned = 0

    def refuse(self, status: int, detail: str, extra_headers: tuple[str, ...] = ()) -> None:
        """Answer from the selector thread without waiting for the client, then close."""
        response, size = error_response(status, detail, extra_headers)
        opened = (self.header_deadline - self.server.limits.header_timeout if self.header_deadline is not None
                  else time.monotonic())
        _log_refusal(None, None, status, size, self.remote_addr, opened)
        try:
            self.socket.settimeout(0)
            self.socket.send(response)
            self.socket.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            super().close()
        finally:
            self.server.release(self)


class ResponderHTTPServer(CPWSGIServer):
    """CherryPy's WSGI server with the connection handling described in this module."""

    version = SERVER_NAME
    ConnectionClass = ResponderConnection

    def __init__(self, server_adapter, limits: ConnectionLimits) -> None:
        super().__init__(server_adapter)
        # CPWSGIServer installs its request class on the connection class; ours extends it.
        self.ConnectionClass.RequestHandlerClass = ResponderRequest
        self.server_name = SERVER_NAME
        self.software = SERVER_NAME
        self.max_request_header_size = MAX_HEADER_BYTES
        self.limits = limits
        # Each client address's counted connections.
        self._clients: dict[str, set[ResponderConnection]] = {}
        self._clients_lock = threading.Lock()

    def process_conn(self, conn: ResponderConnection) -> None:
        if not conn.admitted and not self._admit(conn):
            return
        if conn.rfile.has_data():
            # A pipelined request, already read: the worker reads the rest under the header deadline.
            super().process_conn(conn)
            return
        state = conn.gather_headers()
        if state == "ready":
            super().process_conn(conn)
        elif state == "waiting":
            self._connections.put(conn)
            # The selector closes a connection unused for `timeout` seconds: make that the header deadline
            # when it comes first.
            remaining = conn.header_deadline - time.monotonic()
            conn.last_used = time.time() - max(0.0, self.timeout - remaining)
        elif state == "late":
            conn.refuse(408, f"headers: not complete within {self.limits.header_timeout:g} s "
                             "(request_header_timeout)")
        else:
            conn.close()

    def _admit(self, conn: ResponderConnection) -> bool:
        client = str(conn.remote_addr or "")
        conn.admitted = True
        with self._clients_lock:
            bound = self.limits.per_client
            held = self._clients.setdefault(client, set())
            if bound and len(held) >= bound:
                # A connection the client has closed stays counted until the selector sees it go, which
                # under load comes late: those are let go now, so a client that closes what it opens is
                # never refused.
                for other in [other for other in held if _closed_by_peer(other.socket)]:
                    held.discard(other)
                    other.counted_as = None
            admitted = not bound or len(held) < bound
            if admitted:
                held.add(conn)
        if not admitted:
            conn.refuse(503, f"this address already has {bound} connections open (max_connections_per_client)",
                        ("Retry-After: 5",))
            return False
        conn.counted_as = client
        return True

    def release(self, conn: ResponderConnection) -> None:
        client, conn.counted_as = conn.counted_as, None
        if client is None:
            return
        with self._clients_lock:
            held = self._clients.get(client)
            if held is not None:
                held.discard(conn)
                if not held:
                    del self._clients[client]


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the client has closed this connection (an end of stream waits in it), without reading from it
    or waiting: a socket with a timeout would wait for data before peeking, so it is polled first."""
    descriptor = sock.fileno()
    if descriptor < 0:
        return True
    poller = select.poll()
    poller.register(descriptor, select.POLLIN)
    if not poller.poll(0):
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except ValueError:
        return False  # a socket that takes no flags (TLS): left to the selector
    except OSError:
        return True  # reset


def install_server(limits: ConnectionLimits) -> None:
    """Make CherryPy serve with ResponderHTTPServer; call after the server settings are in cherrypy.config."""
    cherrypy.server.instance = ResponderHTTPServer(cherrypy.server, limits)
