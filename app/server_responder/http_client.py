"""The one HTTP client for what the service and the CLI send: urllib3 with its `Retry`, certificates checked here."""

from __future__ import annotations

import functools
import ipaddress
import json
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from server_responder import __version__

USER_AGENT = f"server-responder/{__version__}"
# Link-local addresses (the instance metadata service among them) hold a box's credentials: never a target.
NEVER_SENT_TO = ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128")
MAX_ANSWER_BYTES = 16 * 1024 * 1024

# Called before each retry with the failed answer's status (None when no answer came) and the reason.
RetryListener = Callable[[int, int | None, str | None], None]


class HttpFailure(OSError):
    """No answer at all: the connection, TLS or the timeout failed (after any retries)."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: Mapping[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


@functools.cache
def _listened_retry() -> type:
    """urllib3's Retry, telling a listener about each attempt that is retried. urllib3 is imported when the
    first request is sent: a service that sends none starts without it."""
    from urllib3.util.retry import Retry

    class ListenedRetry(Retry):
        def __init__(self, *args: Any, listener: RetryListener | None = None, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.listener = listener

        def new(self, **kw: Any) -> ListenedRetry:
            retry = super().new(**kw)
            retry.listener = self.listener
            return retry

        def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
            retry = super().increment(method, url, response, error, _pool, _stacktrace)
            if self.listener is not None:
                self.listener(len(retry.history), response.status if response is not None else None,
                              type(error).__name__ if error is not None else None)
            return retry

    return ListenedRetry


class HttpClient:
    """Requests with a timeout, optional retries of errors and 5xx answers with exponential backoff."""

    def __init__(self, *, timeout: float = 10.0, verify_certificates: bool = True) -> None:
        self.timeout = timeout
        self.verify_certificates = verify_certificates
        self._made = None
        self._making = threading.Lock()

    @property
    def _pool(self):
        with self._making:
            if self._made is None:
                import urllib3

                # The one place certificate checking is decided.
                verify = self.verify_certificates
                self._made = urllib3.PoolManager(maxsize=16, cert_reqs="CERT_REQUIRED" if verify else "CERT_NONE",
                                                 assert_hostname=None if verify else False)
            return self._made

    def request(self, method: str, url: str, *, body: bytes | BinaryIO | None = None,
                headers: Mapping[str, str] | None = None, attempts: int = 1, backoff: float = 0.0,
                on_retry: RetryListener | None = None, limit: int = MAX_ANSWER_BYTES) -> Answer:
        from urllib3.exceptions import HTTPError as Urllib3Error

        retries = _listened_retry()(total=attempts - 1, connect=None, read=None, redirect=0, status=None,
                                 allowed_methods=None, status_forcelist=range(500, 600), backoff_factor=backoff,
                                 raise_on_status=False, raise_on_redirect=False, respect_retry_after_header=False,
                                 listener=on_retry)
        try:
            response = self._pool.request(method, url, body=body,
                                          headers={"User-Agent": USER_AGENT, **(headers or {})},
                                          timeout=self.timeout, retries=retries, redirect=False,
                                          preload_content=False)
            try:
                data = response.read(limit)
            finally:
                response.release_conn()
        except Urllib3Error as error:
            cause = getattr(error, "reason", None) or error
            raise HttpFailure(f"{type(cause).__name__}: {cause}") from None
        return Answer(response.status, data, dict(response.headers))

    def json(self, method: str, url: str, document: Any = None, *, headers: Mapping[str, str] | None = None,
             **options: Any) -> Answer:
        body = json.dumps(document).encode() if document is not None else None
        return self.request(method, url, body=body, headers={"Content-Type": "application/json", **(headers or {})},
                            **options)


class InvalidDestination(ValueError):
    """A URL the service will not send to: malformed, too long, or in a refused network; the message says which."""


def checked_destination(url: object, *, max_length: int, refused_networks: Iterable[str] = ()) -> str:
    """`url` if the service may send requests to it (an http or https URL of a host outside refused networks)."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise InvalidDestination("must be an http or https URL")
    if len(url) > max_length or any(ord(c) <= 32 or ord(c) == 127 for c in url):
        raise InvalidDestination(f"must be a URL of at most {max_length} characters without spaces")
    try:
        parts = urlsplit(url)
        addressable = bool(parts.hostname) and parts.port != 0  # .port raises for a port out of range
    except ValueError:  # brackets that hold no IPv6 address
        addressable = False
    if not addressable:
        raise InvalidDestination("must be an http or https URL with a host and a valid port")
    refused = refused_destination(url, refused_networks)
    if refused:
        raise InvalidDestination(refused)
    return url


def refused_destination(url: str, refused_networks: Iterable[str] = ()) -> str | None:
    """Why the service must not send to `url` (its host is, or resolves to, a refused address), or None."""
    host = urlsplit(url).hostname or ""
    try:
        addresses = {ipaddress.ip_address(host)}
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return None  # a name that does not resolve fails when sent to, like any unreachable host
        addresses = {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}
    networks = [ipaddress.ip_network(network) for network in (*NEVER_SENT_TO, *refused_networks)]
    for address in addresses:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        for network in networks:
            if address.version == network.version and address in network:
                return f"{host} is in {network}, where this responder never sends requests"
    return None
