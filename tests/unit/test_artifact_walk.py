"""The artifacts walk against real directories: links, FIFOs, limits, and entries swapped while it runs."""

import os
import stat
import threading
from pathlib import Path

import pytest

from server_responder.results import artifacts as artifacts_module
from server_responder.results.artifacts import ArtifactLimits, BoundedFile, store_artifacts
from server_responder.results.keys import artifact_index_key, artifact_key
from server_responder.results.local import LocalResultStore
from server_responder.results.store import get_json

LOCATION = "jobs/one"
LIMITS = ArtifactLimits(file_bytes=1000, total_bytes=2500, count=10)


@pytest.fixture
def workspace(tmp_path) -> Path:
    (tmp_path / "ws" / "artifacts").mkdir(parents=True)
    return tmp_path / "ws"


@pytest.fixture
def store(tmp_path) -> LocalResultStore:
    return LocalResultStore(tmp_path / "results")


@pytest.fixture
def secret(tmp_path) -> Path:
    """A directory outside the workspace holding what a job must never get stored."""
    outside = tmp_path / "data"
    outside.mkdir()
    (outside / "api_token").write_text("the-secret-token")
    return outside


def stored_body(store, name):
    found = store.get(artifact_key(LOCATION, name))
    return None if found is None else found.body


def reasons(found):
    return {entry["name"]: entry["reason"] for entry in found.skipped}


def every_stored_body(store):
    return b"".join(store.get(info.key).body for info in store.list())


def test_regular_files_are_stored_with_their_bytes_type_and_size(workspace, store):
    (workspace / "artifacts" / "sub").mkdir()
    (workspace / "artifacts" / "report.txt").write_text("hello")
    (workspace / "artifacts" / "sub" / "blob").write_bytes(bytes(range(256)))
    found = store_artifacts(workspace, LOCATION, store, LIMITS)
    assert [(a["name"], a["size"], a["content_type"]) for a in found.stored] == [
        ("report.txt", 5, "text/plain"), ("sub/blob", 256, "application/octet-stream")]
    assert found.skipped == []
    assert stored_body(store, "sub/blob") == bytes(range(256))
    assert get_json(store, artifact_index_key(LOCATION)) == found.stored


def test_a_linked_artifacts_directory_stores_nothing_and_says_why(workspace, store, secret):
    (workspace / "artifacts").rmdir()
    (workspace / "artifacts").symlink_to(secret)
    found = store_artifacts(workspace, LOCATION, store, LIMITS)
    assert found.stored == [] and reasons(found) == {".": "symbolic link"}
    assert list(store.list()) == []


def test_an_artifacts_file_in_place_of_the_directory_is_not_a_directory(workspace, store):
    (workspace / "artifacts").rmdir()
    (workspace / "artifacts").write_text("x")
    assert reasons(store_artifacts(workspace, LOCATION, store, LIMITS)) == {".": "not a directory"}


def test_links_fifos_and_sockets_inside_are_skipped(workspace, store, secret):
    artifacts = workspace / "artifacts"
    (artifacts / "token").symlink_to(secret / "api_token")
    (artifacts / "data").symlink_to(secret)
    os.mkfifo(artifacts / "pipe")
    (artifacts / "kept.txt").write_text("kept")
    found = store_artifacts(workspace, LOCATION, store, LIMITS)
    assert [a["name"] for a in found.stored] == ["kept.txt"]
    assert reasons(found) == {"token": "symbolic link", "data": "symbolic link", "pipe": "not a regular file"}
    assert b"the-secret-token" not in every_stored_body(store)


def test_a_hard_link_is_a_regular_file(workspace, store, tmp_path):
    readable = tmp_path / "shared.txt"
    readable.write_text("shared")
    os.link(readable, workspace / "artifacts" / "linked.txt")
    found = store_artifacts(workspace, LOCATION, store, LIMITS)
    assert [a["name"] for a in found.stored] == ["linked.txt"] and stored_body(store, "linked.txt") == b"shared"


def test_per_file_limit_skips_whole_files_and_takes_one_exactly_at_it(workspace, store):
    artifacts = workspace / "artifacts"
    (artifacts / "a-at-limit.bin").write_bytes(b"a" * 1000)
    (artifacts / "b-over.bin").write_bytes(b"b" * 1001)
    with open(artifacts / "c-sparse.bin", "wb") as sparse:
        sparse.truncate(2 * 1024 ** 3)
    found = store_artifacts(workspace, LOCATION, store, LIMITS)
    assert [a["name"] for a in found.stored] == ["a-at-limit.bin"]
    assert stored_body(store, "a-at-limit.bin") == b"a" * 1000
    assert reasons(found) == {"b-over.bin": "over the per-file limit (1001 bytes > 1000)",
                              "c-sparse.bin": f"over the per-file limit ({2 * 1024 ** 3} bytes > 1000)"}
    assert stored_body(store, "b-over.bin") is None


def test_total_limit_skips_a_file_that_would_pass_it_and_takes_smaller_later_ones(workspace, store):
    artifacts = workspace / "artifacts"
    for name, size in (("1", 900), ("2", 900), ("3", 900), ("4", 600), ("5", 200)):
        (artifacts / name).write_bytes(b"x" * size)
    found = store_artifacts(workspace, LOCATION, store, LIMITS)
    assert [a["name"] for a in found.stored] == ["1", "2", "4"]
    assert reasons(found) == {"3": "over the job's total limit", "5": "over the job's total limit"}
    assert sum(a["size"] for a in found.stored) <= LIMITS.total_bytes


def test_count_limit_stops_at_the_first_file_past_it(workspace, store):
    for number in range(15):
        (workspace / "artifacts" / f"f{number:02}").write_text(str(number))
    found = store_artifacts(workspace, LOCATION, store, LIMITS)
    assert [a["name"] for a in found.stored] == [f"f{number:02}" for number in range(10)]
    assert found.skipped == [{"name": "f10", "reason": "too many artifacts"}]


def test_names_outside_the_key_alphabet_are_skipped_as_invalid(workspace, store):
    (workspace / "artifacts" / "with space.txt").write_text("x")
    os.close(os.open(os.fsencode(workspace / "artifacts") + b"/\xff.bin", os.O_CREAT | os.O_WRONLY, 0o600))
    found = store_artifacts(workspace, LOCATION, store, LIMITS)
    assert found.stored == []
    assert sorted(entry["name"] for entry in found.skipped) == ["with space.txt", "\ufffd.bin"]
    assert all(entry["reason"].startswith("invalid name: ") for entry in found.skipped)


def test_a_directory_past_the_key_length_is_not_descended(workspace, store):
    deep = workspace / "artifacts"
    for _ in range(60):
        deep = deep / "d123456789"
    deep.mkdir(parents=True)
    (deep / "f").write_text("x")
    found = store_artifacts(workspace, LOCATION, store, LIMITS)
    assert found.stored == [] and len(found.skipped) == 1
    assert found.skipped[0]["reason"] == "invalid name: longer than 512 characters"


def test_the_walk_examines_a_bounded_number_of_entries(workspace, store):
    limits = ArtifactLimits(file_bytes=1000, total_bytes=2500, count=2)
    for number in range(limits.entries_examined + 50):
        (workspace / "artifacts" / f"link{number}").symlink_to("/etc/passwd")
    found = store_artifacts(workspace, LOCATION, store, limits)
    assert len(found.skipped) == limits.entries_examined + 1
    assert found.skipped[0] == {"name": ".", "reason": "too many entries: the rest were not examined"}
    assert {entry["reason"] for entry in found.skipped[1:]} == {"symbolic link"}


def test_the_content_type_sniff_reads_only_the_head(workspace, store):
    artifacts = workspace / "artifacts"
    (artifacts / "text-then-bytes").write_bytes(b"a" * artifacts_module.SNIFF_BYTES + b"\xff\xfe")
    (artifacts / "cut-character").write_bytes(b"a" * (artifacts_module.SNIFF_BYTES - 1) + "é".encode() * 10)
    (artifacts / "short-cut").write_bytes(b"abc\xc3")
    roomy = ArtifactLimits(file_bytes=10_000, total_bytes=100_000, count=10)
    found = {a["name"]: a["content_type"] for a in store_artifacts(workspace, LOCATION, store, roomy).stored}
    assert found == {"text-then-bytes": "text/plain; charset=utf-8", "cut-character": "text/plain; charset=utf-8",
                     "short-cut": "application/octet-stream"}


class SwappingOs:
    """The real `os` module, but right after the walk looks at `entry` (lstat) or opens a file (fstat),
    `swap` runs once: the job's move in the window between looking and opening, or opening and reading."""

    def __init__(self, after: str, entry: str, swap) -> None:
        self.after, self.entry, self.swap = after, entry, swap
        self.done = False

    def __getattr__(self, name):
        return getattr(os, name)

    def stat(self, path, *, dir_fd=None, follow_symlinks=True):
        result = os.stat(path, dir_fd=dir_fd, follow_symlinks=follow_symlinks)
        if self.after == "lstat" and path == self.entry and not self.done:
            self.done = True
            self.swap()
        return result

    def fstat(self, descriptor):
        result = os.fstat(descriptor)
        if self.after == "fstat" and stat.S_ISREG(result.st_mode) and not self.done:
            self.done = True
            self.swap()
        return result


def test_a_directory_swapped_for_a_link_after_it_was_looked_at_is_not_followed(workspace, store, secret,
                                                                                monkeypatch):
    inner = workspace / "artifacts" / "inner"
    inner.mkdir()
    (inner / "api_token").write_text("harmless")

    def swap():
        inner.rename(workspace / "moved")
        inner.symlink_to(secret)

    monkeypatch.setattr(artifacts_module, "os", SwappingOs("lstat", "inner", swap))
    found = store_artifacts(workspace, LOCATION, store, LIMITS)
    assert inner.is_symlink()
    assert found.stored == [] and reasons(found) == {"inner": "symbolic link"}
    assert b"the-secret-token" not in every_stored_body(store)


def test_a_file_swapped_for_a_link_or_a_fifo_after_it_was_looked_at_is_not_opened(workspace, store, secret,
                                                                                  monkeypatch):
    artifacts = workspace / "artifacts"
    (artifacts / "a").write_text("harmless")
    (artifacts / "b").write_text("harmless")

    def to_link():
        (artifacts / "a").unlink()
        (artifacts / "a").symlink_to(secret / "api_token")

    monkeypatch.setattr(artifacts_module, "os", SwappingOs("lstat", "a", to_link))
    found = store_artifacts(workspace, LOCATION, store, LIMITS)
    assert reasons(found) == {"a": "symbolic link"} and [a["name"] for a in found.stored] == ["b"]

    def to_fifo():
        (artifacts / "b").unlink()
        os.mkfifo(artifacts / "b")

    # A FIFO opened for reading blocks until a writer comes: the walk runs aside, and a writer frees it if stuck.
    monkeypatch.setattr(artifacts_module, "os", SwappingOs("lstat", "b", to_fifo))
    walked = []
    walk = threading.Thread(target=lambda: walked.append(store_artifacts(workspace, "jobs/two", store, LIMITS)))
    walk.start()
    walk.join(20)
    if walk.is_alive():
        os.close(os.open(artifacts / "b", os.O_WRONLY | os.O_NONBLOCK))
        walk.join()
    assert walked and reasons(walked[0])["b"] == "not a regular file"


def test_a_file_growing_after_its_fstat_is_stored_at_its_fstat_size(workspace, store, monkeypatch):
    growing = workspace / "artifacts" / "growing.log"
    growing.write_bytes(b"x" * 100)

    def grow():
        with growing.open("ab") as handle:
            handle.write(b"y" * 5000)

    monkeypatch.setattr(artifacts_module, "os", SwappingOs("fstat", "", grow))
    found = store_artifacts(workspace, LOCATION, store, LIMITS)
    assert growing.stat().st_size == 5100
    assert stored_body(store, "growing.log") == b"x" * 100 and found.stored[0]["size"] == 100


def test_a_file_shrinking_after_its_fstat_is_stored_as_it_is(workspace, store, monkeypatch):
    shrinking = workspace / "artifacts" / "shrinking.log"
    shrinking.write_bytes(b"x" * 900)
    monkeypatch.setattr(artifacts_module, "os", SwappingOs("fstat", "", lambda: os.truncate(shrinking, 300)))
    found = store_artifacts(workspace, LOCATION, store, LIMITS)
    assert stored_body(store, "shrinking.log") == b"x" * 300 and found.stored[0]["size"] == 300


def test_bounded_file_reads_and_seeks_within_its_limit(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    descriptor = os.open(path, os.O_RDONLY)
    try:
        source = BoundedFile(descriptor, 6)
        assert source.read(4) == b"0123" and source.read() == b"45" and source.read() == b""
        assert source.seek(0, os.SEEK_END) == 6 and source.seek(2) == 2 and source.read(100) == b"2345"
        assert source.head(3) == b"012" and source.tell() == 6 and source.high_water == 6
    finally:
        os.close(descriptor)


def test_the_local_store_streams_into_a_temporary_file_and_renames_it(tmp_path, store):
    path = tmp_path / "source"
    path.write_bytes(b"z" * 3_000_000)
    with path.open("rb") as source:
        store.put_file("a/b", source, 3_000_000, "application/octet-stream")
    assert store.get("a/b").body == b"z" * 3_000_000
    assert not list(store.root.rglob(".tmp-*"))
