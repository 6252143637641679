"""The upload spool against a store that can be switched off and a real HTTP server on loopback."""

import http.server
import io
import json
import os
import threading
from pathlib import Path

import pytest

from server_responder.results.artifacts import BoundedFile
from server_responder.results.keys import artifact_key
from server_responder.results.local import LocalResultStore
from server_responder.results.store import StoreUnavailable, get_json, put_json
from server_responder.results.upload_spool import SpooledStore, UploadSpool, UploadUrlStore, upload_targets


class SwitchableStore(LocalResultStore):
    """A local store that refuses every call while `down`, and records the keys it was given."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.down = False
        self.fault: Exception | None = None
        self.calls = 0
        self.received: list[str] = []

    def put(self, key, body, content_type):
        self.put_file(key, io.BytesIO(body), len(body), content_type)

    def put_file(self, key, source, size, content_type):
        self.calls += 1
        if self.fault is not None:
            raise self.fault
        if self.down:
            raise StoreUnavailable("the store is down")
        super().put_file(key, source, size, content_type)
        self.received.append(key)


class Clock:
    """Monotonic time that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def remote(tmp_path):
    return SwitchableStore(tmp_path / "remote")


@pytest.fixture
def clock():
    return Clock()


def spooled(tmp_path, remote, clock=None, **options):
    options.setdefault("retry_seconds", 60.0)
    spool = UploadSpool(tmp_path / "uploads", remote, clock=clock or Clock(), **options)
    return SpooledStore(remote, spool), spool


def test_a_put_goes_straight_through_while_the_store_is_up(tmp_path, remote):
    store, spool = spooled(tmp_path, remote)
    put_json(store, "results/a", {"n": 1})
    assert get_json(remote, "results/a") == {"n": 1}
    assert spool.counts() == {"pending_uploads": 0, "failed_uploads": 0, "pending_callbacks": 0, "failed_callbacks": 0}


def test_a_put_while_the_store_is_down_stays_spooled_and_readable(tmp_path, remote, clock):
    store, spool = spooled(tmp_path, remote, clock)
    remote.down = True
    put_json(store, "results/a", {"n": 1})
    assert spool.counts()["pending_uploads"] == 1
    assert remote.get("results/a") is None
    assert get_json(store, "results/a") == {"n": 1}
    assert [info.key for info in store.list("results/")] == ["results/a"]
    spool.deliver_due()
    assert spool.counts()["pending_uploads"] == 1
    remote.down = False
    clock.advance(59)
    spool.deliver_due()
    assert spool.counts()["pending_uploads"] == 1
    clock.advance(1)
    spool.deliver_due()
    assert get_json(remote, "results/a") == {"n": 1}
    assert spool.counts()["pending_uploads"] == 0


def test_uploads_are_delivered_oldest_first_and_the_newest_version_of_a_key_wins(tmp_path, remote, clock):
    store, spool = spooled(tmp_path, remote, clock)
    remote.down = True
    for key, version in (("k/first", 1), ("k/second", 1), ("k/first", 2), ("k/third", 1)):
        put_json(store, key, {"version": version})
    assert spool.counts()["pending_uploads"] == 3
    remote.down = False
    clock.advance(60)
    spool.deliver_due()
    assert remote.received == ["k/second", "k/first", "k/third"]
    assert get_json(remote, "k/first") == {"version": 2}


def test_while_the_store_fails_puts_are_only_spooled_and_retries_back_off(tmp_path, remote):
    store, spool = spooled(tmp_path, remote)
    remote.down = True
    put_json(store, "a", 1)
    put_json(store, "b", 2)
    spool.deliver_due()
    # One attempt, then nothing until the retry time: no call per put or per drain.
    assert remote.calls == 1
    assert spool.counts()["pending_uploads"] == 2


def test_retries_back_off_doubling_up_to_the_maximum(tmp_path, remote, clock):
    store, spool = spooled(tmp_path, remote, clock, retry_seconds=2, retry_max_seconds=10)
    remote.down = True
    store.put("k", b"x", "text/plain")
    waits = []
    for _ in range(5):
        calls, waited = remote.calls, 0
        while remote.calls == calls:
            clock.advance(1)
            waited += 1
            spool.deliver_due()
        waits.append(waited)
    assert waits == [2, 4, 8, 10, 10]


def test_a_new_spool_on_the_same_directory_delivers_what_an_earlier_run_left(tmp_path, remote):
    store, _ = spooled(tmp_path, remote)
    remote.down = True
    store.put("left/behind", b"bytes", "application/octet-stream")
    remote.down = False
    _, after_restart = spooled(tmp_path, remote)
    after_restart.deliver_due()
    stored = remote.get("left/behind")
    assert (stored.body, stored.content_type) == (b"bytes", "application/octet-stream")


def test_drain_never_raises_and_keeps_the_upload(tmp_path, remote, clock):
    store, spool = spooled(tmp_path, remote, clock)
    remote.fault = RuntimeError("unexpected")
    store.put("kept", b"x", "text/plain")
    clock.advance(60)
    spool.deliver_due()
    assert remote.calls == 2
    assert spool.counts()["pending_uploads"] == 1


def test_an_unreadable_entry_is_set_aside_and_the_rest_delivered(tmp_path, remote, clock):
    store, spool = spooled(tmp_path, remote, clock)
    remote.down = True
    store.put("good", b"x", "text/plain")
    (spool.directory / "store-broken.upload").write_bytes(b"not a header")
    remote.down = False
    clock.advance(60)
    spool.deliver_due()
    assert remote.get("good").body == b"x"
    assert spool.counts() == {"pending_uploads": 0, "failed_uploads": 1, "pending_callbacks": 0, "failed_callbacks": 0}


def test_invalid_keys_are_refused_before_anything_is_written(tmp_path, remote):
    store, spool = spooled(tmp_path, remote)
    with pytest.raises(ValueError):
        store.put("../escape", b"x", "text/plain")
    assert not list(spool.directory.glob("*.upload"))


class UploadTarget(http.server.ThreadingHTTPServer):
    """Answers PUTs with `status` and keeps what it was sent."""

    def __init__(self) -> None:
        self.status = 200
        self.received: dict[str, tuple[bytes, str]] = {}
        target = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if target.status == 200:
                    target.received[self.path] = (body, self.headers["Content-Type"])
                self.send_response(target.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}?X-Amz-Signature=abc"


@pytest.fixture
def target():
    server = UploadTarget()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_objects_with_a_url_are_stored_and_also_put_there(tmp_path, target):
    local = LocalResultStore(tmp_path / "results")
    spool = UploadSpool(tmp_path / "uploads", None)
    urls = upload_targets("jobs/one", {"result": target.url("/result"),
                                       "artifacts": {"log.txt": target.url("/log")}})
    store = UploadUrlStore(local, spool, urls)
    put_json(store, "jobs/one", {"ok": True})
    store.put(artifact_key("jobs/one", "log.txt"), b"log", "text/plain")
    store.put(artifact_key("jobs/one", "other.bin"), b"\x00", "application/octet-stream")
    assert json.loads(target.received["/result?X-Amz-Signature=abc"][0]) == {"ok": True}
    assert target.received["/result?X-Amz-Signature=abc"][1] == "application/json"
    assert target.received["/log?X-Amz-Signature=abc"] == (b"log", "text/plain")
    assert len(target.received) == 2
    assert get_json(local, "jobs/one") == {"ok": True}
    assert spool.counts()["pending_uploads"] == 0


def test_a_url_that_fails_for_now_is_retried(tmp_path, target, clock):
    spool = UploadSpool(tmp_path / "uploads", None, retry_seconds=60, clock=clock)
    target.status = 503
    spool.add("jobs/two", b"{}", "application/json", url=target.url("/two"))
    assert spool.counts()["pending_uploads"] == 1
    target.status = 200
    spool.deliver_due()
    assert not target.received
    clock.advance(60)
    spool.deliver_due()
    assert "/two?X-Amz-Signature=abc" in target.received
    assert spool.counts()["pending_uploads"] == 0


def test_a_url_that_refuses_the_upload_is_set_aside(tmp_path, target):
    spool = UploadSpool(tmp_path / "uploads", None)
    target.status = 403
    spool.add("jobs/three", b"{}", "application/json", url=target.url("/three"))
    assert spool.counts() == {"pending_uploads": 0, "failed_uploads": 1, "pending_callbacks": 0, "failed_callbacks": 0}
    assert list(spool.failed_directory.glob("*.upload"))


def test_non_http_upload_urls_are_refused(tmp_path):
    spool = UploadSpool(tmp_path / "uploads", None)
    with pytest.raises(ValueError):
        spool.add("k", b"", "text/plain", url="file:///etc/passwd")


def test_a_streamed_object_with_a_url_is_stored_and_put_there_whole(tmp_path, target):
    source_path = tmp_path / "large.bin"
    body = bytes(range(256)) * 12_000
    source_path.write_bytes(body + b"written after the size was taken")
    local = LocalResultStore(tmp_path / "results")
    spool = UploadSpool(tmp_path / "uploads", None)
    key = artifact_key("jobs/one", "large.bin")
    store = UploadUrlStore(local, spool, upload_targets("jobs/one", {"artifacts": {"large.bin": target.url("/l")}}))
    descriptor = os.open(source_path, os.O_RDONLY)
    try:
        store.put_file(key, BoundedFile(descriptor, len(body)), len(body), "application/octet-stream")
    finally:
        os.close(descriptor)
    assert local.get(key).body == body
    assert target.received["/l?X-Amz-Signature=abc"] == (body, "application/octet-stream")
    assert spool.counts()["pending_uploads"] == 0


def test_a_streamed_put_while_the_store_is_down_is_delivered_later_from_the_spool(tmp_path, remote, clock):
    store, spool = spooled(tmp_path, remote, clock)
    remote.down = True
    body = b"spooled bytes " * 100_000
    store.put_file("results/big", io.BytesIO(body), len(body), "application/octet-stream")
    assert spool.counts()["pending_uploads"] == 1 and store.get("results/big").body == body
    remote.down = False
    clock.advance(60)
    spool.deliver_due()
    assert spool.counts()["pending_uploads"] == 0 and remote.get("results/big").body == body
