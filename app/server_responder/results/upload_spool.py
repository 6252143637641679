"""Uploads that survive an unreachable S3 and a crash: spooled in the data dir first, then delivered.

Each spooled upload is one file, `<header JSON line>\\n<body>`, written atomically. An upload goes to the
remote store, to a presigned URL a caller gave with the job (PUT), or is a completion callback (POST).
`UploadSpool.deliver_due` delivers what is due, oldest first, and backs off while a destination fails; the
web layer calls it from an engine plugin.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from server_responder.files import stream_atomically
from server_responder.http_client import HttpClient, HttpFailure
from server_responder.results.keys import artifact_key, validate_key
from server_responder.results.store import ObjectInfo, ResultStore, StoredObject, StoreUnavailable

log = logging.getLogger("server_responder.uploads")
UPLOAD_SUFFIX = ".upload"
_LOCK_STRIPES = 64
_PARTIAL_WRITE_AGE_SECONDS = 3600.0
_MAX_HEADER_BYTES = 64 * 1024
# Answers that say a presigned URL will never take the upload (expired, wrong signature, gone).
_RETRYABLE_HTTP = frozenset({408, 425, 429})
# What each HTTP method sends, as logs and counts name it.
KINDS = {"PUT": "upload", "POST": "callback"}


class UploadRefused(Exception):
    """The destination answered that it will never accept this upload."""


@dataclass(frozen=True)
class Upload:
    """One spooled object on its way to the remote store (`url` None) or to a presigned URL."""

    name: str
    key: str
    content_type: str
    url: str | None
    queued_ns: int
    size: int
    method: str = "PUT"

    @property
    def kind(self) -> str:
        return KINDS[self.method]

    @property
    def destination(self) -> str:
        return "store" if self.url is None else urllib.parse.urlsplit(self.url).netloc


class UploadSpool:
    """The durable queue: `add` spools and tries once, `deliver_due` retries the rest with backoff."""

    def __init__(self, directory: Path, remote: ResultStore | None, *, retry_seconds: float = 5.0,
                 retry_max_seconds: float = 300.0, http_timeout: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.directory = Path(directory)
        self.failed_directory = self.directory / "failed"
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.failed_directory.mkdir(exist_ok=True, mode=0o700)
        self.remote = remote
        self.retry_seconds = retry_seconds
        self.retry_max_seconds = retry_max_seconds
        self.http = HttpClient(timeout=http_timeout)
        self.clock = clock
        self._stripes = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        self._state = threading.Lock()
        self._store_failures = 0
        self._store_retry_at = 0.0
        self._url_retries: dict[str, tuple[int, float]] = {}
        # Deliveries tried since the service started, by kind (upload, callback) and outcome, for the metrics.
        self._attempts: Counter[tuple[str, str]] = Counter()

    def add(self, key: str, body: bytes, content_type: str, url: str | None = None, *, method: str = "PUT",
            in_background: bool = False) -> None:
        """Spool an upload, then try it once unless its destination is failing; raises only for local faults.

        `in_background` makes the spooled entry durable and tries it from a thread of its own, so the caller
        never waits for the destination.
        """
        self.add_file(key, io.BytesIO(body), content_type, url, method=method, in_background=in_background)

    def add_file(self, key: str, source: BinaryIO, content_type: str, url: str | None = None, *,
                 method: str = "PUT", in_background: bool = False) -> None:
        """`add` of what `source` reads, copied into the spool a chunk at a time."""
        validate_key(key, "key")
        if method not in KINDS or (method != "PUT" and url is None):
            raise ValueError(f"cannot spool a {method} to {'the store' if url is None else 'a URL'}")
        if url is not None:
            _check_url(url)
        name = _entry_name(key, url, method)
        header = {"key": key, "content_type": content_type, "url": url, "queued_ns": time.time_ns(),
                  "method": method}
        # Made durable only when it will stay: the usual upload succeeds at once and never needs the fsync.
        due = self._due(name, url, self.clock())
        with self._lock(name):
            stream_atomically(self.directory / name, source, head=json.dumps(header).encode() + b"\n", mode=0o600,
                              durable=in_background or not due)
        if due and in_background:
            threading.Thread(target=self._deliver, args=(name,), name=f"{KINDS[method]}-{name[:16]}",
                             daemon=True).start()
        elif due and not self._deliver(name):
            self._make_durable(name)

    def read(self, key: str) -> StoredObject | None:
        """The newest not yet delivered version of `key` for the remote store, if any."""
        try:
            upload, body = _load(self.directory / _entry_name(key, None))
        except (OSError, ValueError):
            return None
        return StoredObject(key, body, upload.content_type)

    def discard(self, key: str) -> None:
        name = _entry_name(key, None)
        with self._lock(name):
            (self.directory / name).unlink(missing_ok=True)

    def queued(self) -> list[Upload]:
        """Every spooled upload, oldest first."""
        uploads = []
        for path in self.directory.glob("*" + UPLOAD_SUFFIX):
            try:
                uploads.append(_load_header(path))
            except FileNotFoundError:
                continue
            except ValueError:
                self._quarantine(path, "unreadable spool entry")
        return sorted(uploads, key=lambda upload: upload.queued_ns)

    def pending_objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        for upload in self.queued():
            if upload.url is None and upload.key.startswith(prefix):
                yield ObjectInfo(upload.key, upload.size, upload.queued_ns / 1e9)

    def counts(self) -> dict[str, int]:
        counts = {}
        for state, directory in (("pending", self.directory), ("failed", self.failed_directory)):
            names = [path.name for path in directory.glob("*" + UPLOAD_SUFFIX)]
            callbacks = sum(name.startswith(_CALLBACK_PREFIX) for name in names)
            counts[f"{state}_uploads"] = len(names) - callbacks
            counts[f"{state}_callbacks"] = callbacks
        return counts

    def attempt_counts(self) -> dict[tuple[str, str], int]:
        """Deliveries tried since the service started, by (kind, outcome): delivered, failed or refused."""
        with self._state:
            return dict(self._attempts)

    def deliver_due(self) -> None:
        """Deliver every due upload, oldest first. Never raises: it runs in a background monitor."""
        try:
            now = self.clock()
            for upload in self.queued():
                if self._due(upload.name, upload.url, now):
                    self._deliver(upload.name, due_at=now)
            self._remove_partial_writes()
        except Exception:
            log.exception("upload spool fault", extra={"event": "upload.fault"})

    def _due(self, name: str, url: str | None, now: float) -> bool:
        with self._state:
            if url is None:
                return now >= self._store_retry_at
            return now >= self._url_retries.get(name, (0, 0.0))[1]

    def _deliver(self, name: str, due_at: float | None = None) -> bool:
        path = self.directory / name
        with self._lock(name):
            try:
                upload, body = _open_body(path)
            except FileNotFoundError:
                return True
            except ValueError:
                self._quarantine(path, "unreadable spool entry")
                return True
            # Another thread may have tried it while this one waited for the lock.
            if due_at is not None and not self._due(name, upload.url, due_at):
                return False
            try:
                with body:
                    self._send(upload, body)
            except UploadRefused as error:
                self._count_attempt(upload, "refused")
                self._quarantine(path, str(error), upload)
                return True
            except Exception as error:
                self._count_attempt(upload, "failed")
                self._failed(upload, error)
                return False
            self._count_attempt(upload, "delivered")
            path.unlink(missing_ok=True)
        self._delivered(upload)
        return True

    def _send(self, upload: Upload, body: BinaryIO) -> None:
        """Send the entry's body, read from the spool a chunk at a time."""
        if upload.url is not None:
            send_to_url(self.http, upload.method, upload.url, body, upload.content_type, size=upload.size)
        elif self.remote is None:
            raise StoreUnavailable("no remote store is configured for this spooled upload")
        else:
            self.remote.put_file(upload.key, body, upload.size, upload.content_type)

    def _count_attempt(self, upload: Upload, outcome: str) -> None:
        with self._state:
            self._attempts[(upload.kind, outcome)] += 1

    def _failed(self, upload: Upload, error: Exception) -> None:
        with self._state:
            if upload.url is None:
                self._store_failures += 1
                attempts = self._store_failures
                delay = self._backoff(attempts)
                self._store_retry_at = self.clock() + delay
            else:
                attempts = self._url_retries.get(upload.name, (0, 0.0))[0] + 1
                delay = self._backoff(attempts)
                self._url_retries[upload.name] = (attempts, self.clock() + delay)
        log.warning(f"{upload.kind} failed; it stays spooled", extra={
            "event": f"{upload.kind}.failed", "key": upload.key, "destination": upload.destination, "attempts": attempts,
            "retry_in_s": round(delay, 3), "reason": _reason(error)})

    def _delivered(self, upload: Upload) -> None:
        with self._state:
            if upload.url is None:
                attempts, self._store_failures, self._store_retry_at = self._store_failures, 0, 0.0
            else:
                attempts = self._url_retries.pop(upload.name, (0, 0.0))[0]
        # A callback's delivery is worth a line each time; an upload's only after it failed.
        if attempts or upload.kind == "callback":
            log.info(f"{upload.kind} delivered", extra={
                "event": f"{upload.kind}.delivered", "key": upload.key, "destination": upload.destination,
                "failed_attempts": attempts})

    def _backoff(self, attempts: int) -> float:
        return min(self.retry_seconds * 2 ** min(attempts - 1, 32), self.retry_max_seconds)

    def _quarantine(self, path: Path, reason: str, upload: Upload | None = None) -> None:
        """Keep an upload that can never be delivered out of the queue, for an operator to look at."""
        try:
            path.replace(self.failed_directory / path.name)
        except FileNotFoundError:
            return
        with self._state:
            self._url_retries.pop(path.name, None)
        kind = upload.kind if upload else "upload"
        log.error(f"{kind} abandoned", extra={
            "event": f"{kind}.abandoned", "key": upload.key if upload else None,
            "destination": upload.destination if upload else None, "reason": reason,
            "kept_in": str(self.failed_directory)})

    def _make_durable(self, name: str) -> None:
        with self._lock(name):
            try:
                descriptor = os.open(self.directory / name, os.O_RDONLY)
            except FileNotFoundError:
                return
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def _remove_partial_writes(self) -> None:
        cutoff = time.time() - _PARTIAL_WRITE_AGE_SECONDS
        for path in self.directory.glob(".tmp-*"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except FileNotFoundError:
                continue

    def _lock(self, name: str) -> threading.Lock:
        return self._stripes[int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % _LOCK_STRIPES]


class SpooledStore:
    """A remote store behind the upload spool: `put` never fails because the remote is down, and reads
    see a spooled version until it is delivered."""

    def __init__(self, remote: ResultStore, spool: UploadSpool) -> None:
        self.remote = remote
        self.spool = spool

    def put(self, key: str, body: bytes, content_type: str) -> None:
        self.spool.add(key, body, content_type)

    def put_file(self, key: str, source: BinaryIO, size: int, content_type: str) -> None:
        self.spool.add_file(key, source, content_type)

    def get(self, key: str) -> StoredObject | None:
        return self.spool.read(validate_key(key, "key")) or self.remote.get(key)

    def delete(self, key: str) -> None:
        self.spool.discard(validate_key(key, "key"))
        self.remote.delete(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        pending = {info.key: info for info in self.spool.pending_objects(prefix)}
        yield from pending.values()
        for info in self.remote.list(prefix):
            if info.key not in pending:
                yield info

    def url(self, key: str) -> str:
        return self.remote.url(key)


class UploadUrlStore:
    """A job's store when its caller sent presigned URLs: objects are stored as usual, and the ones with
    a URL are also PUT there through the spool, so a box needs no credentials for the caller's bucket."""

    def __init__(self, inner: ResultStore, spool: UploadSpool, urls: Mapping[str, str]) -> None:
        self.inner = inner
        self.spool = spool
        self.urls = dict(urls)

    def put(self, key: str, body: bytes, content_type: str) -> None:
        self.inner.put(key, body, content_type)
        if key in self.urls:
            self.spool.add(key, body, content_type, url=self.urls[key])

    def put_file(self, key: str, source: BinaryIO, size: int, content_type: str) -> None:
        """Streamed twice when the object has a URL, so `source` must be seekable."""
        start = source.tell()
        self.inner.put_file(key, source, size, content_type)
        if key in self.urls:
            source.seek(start)
            self.spool.add_file(key, source, content_type, url=self.urls[key])

    def get(self, key: str) -> StoredObject | None:
        return self.inner.get(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def url(self, key: str) -> str:
        return self.inner.url(key)


def upload_targets(location: str, upload_urls: Mapping[str, Any]) -> dict[str, str]:
    """Store keys mapped to the URLs a job's `upload_urls` gives for them."""
    targets = {location: upload_urls["result"]} if upload_urls.get("result") else {}
    for name, url in (upload_urls.get("artifacts") or {}).items():
        targets[artifact_key(location, name)] = url
    return targets


def send_to_url(client: HttpClient, method: str, url: str, body: bytes | BinaryIO, content_type: str,
                size: int | None = None) -> None:
    """One HTTP PUT or POST of bytes or a stream of `size` bytes; UploadRefused when the answer says retrying
    cannot help."""
    _check_url(url)
    headers = {"Content-Type": content_type, **({} if size is None else {"Content-Length": str(size)})}
    try:
        answer = client.request(method, url, body=body, headers=headers)
    except HttpFailure as error:
        raise StoreUnavailable(f"the upload URL is unreachable: {error}") from None
    if answer.status < 300:
        return
    if answer.status < 500 and answer.status not in _RETRYABLE_HTTP:
        raise UploadRefused(f"the upload URL answered HTTP {answer.status}")
    raise StoreUnavailable(f"the upload URL answered HTTP {answer.status}")


def _check_url(url: str) -> None:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError("upload URLs must be http or https URLs")


_CALLBACK_PREFIX = "callback-"


def _entry_name(key: str, url: str | None, method: str = "PUT") -> str:
    # A presigned URL names one object; a callback URL takes many documents, told apart by their key.
    if url is None:
        kind, identity = "store", key
    elif method == "PUT":
        kind, identity = "url", url
    else:
        kind, identity = _CALLBACK_PREFIX.rstrip("-"), f"{key}\n{url}"
    return f"{kind}-{hashlib.sha256(identity.encode()).hexdigest()[:40]}{UPLOAD_SUFFIX}"


def _parse_header(line: bytes, name: str, size: int) -> Upload:
    try:
        header = json.loads(line)
        method = header.get("method", "PUT")
        if method not in KINDS:
            raise ValueError(f"method {method!r}")
        return Upload(name, validate_key(header["key"], "key"), str(header["content_type"]), header.get("url"),
                      int(header["queued_ns"]), size, method)
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{name}: {error}") from None


def _load_header(path: Path) -> Upload:
    upload, handle = _open_body(path)
    handle.close()
    return upload


def _open_body(path: Path) -> tuple[Upload, BinaryIO]:
    """An entry's header, and its file positioned at the body, for streaming it."""
    handle = path.open("rb")
    try:
        line = handle.readline(_MAX_HEADER_BYTES)
        if not line.endswith(b"\n"):
            raise ValueError(f"{path.name}: no header line")
        return _parse_header(line, path.name, os.fstat(handle.fileno()).st_size - len(line)), handle
    except BaseException:
        handle.close()
        raise


def _load(path: Path) -> tuple[Upload, bytes]:
    data = path.read_bytes()
    line, newline, body = data.partition(b"\n")
    if not newline:
        raise ValueError(f"{path.name}: no header line")
    return _parse_header(line, path.name, len(body)), body


def _reason(error: Exception) -> str:
    # Messages of our own errors never hold the presigned URL; others get only their type.
    if isinstance(error, (StoreUnavailable, UploadRefused)):
        return str(error)
    return type(error).__name__
