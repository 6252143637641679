"""Artifacts a hostile job leaves, against a real responder: links to the service's files, FIFOs, huge files."""

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

MIB = 1024 * 1024


def pattern(size: int) -> bytes:
    """Bytes that differ along the file, so a stored copy that is cut or shifted does not match."""
    block = bytes(range(251))
    return (block * (size // len(block) + 1))[:size]


PATTERN_SCRIPT = """\
import sys
block = bytes(range(251))
size = int(sys.argv[1]) if len(sys.argv) > 1 else {size}
with open('artifacts/{name}', 'wb') as out:
    whole, rest = divmod(size, len(block))
    for _ in range(whole):
        out.write(block)
    out.write(block[:rest])
"""


def skipped(job) -> dict[str, str]:
    return {entry["name"]: entry["reason"] for entry in job["skipped_artifacts"]}


@pytest.fixture(params=["service user", "job user"])
def hostile_box(request, make_responder):
    """A responder whose jobs run as its own user, or (as root) as `nobody` through `job_user`."""
    if request.param == "service user":
        yield make_responder()
        return
    if os.geteuid() != 0:
        pytest.skip("switching users needs root")
    # pytest's own temporary directories are private to root; a job user must be able to reach its work dir.
    base = Path(tempfile.mkdtemp(prefix="sr-artifacts-"))
    base.chmod(0o711)
    box = make_responder(base=base, job_user="nobody")
    yield box
    box.stop()
    shutil.rmtree(base)


def test_a_linked_artifacts_directory_stores_nothing_of_the_data_dir(hostile_box):
    box = hostile_box
    job = box.submit(f"rmdir artifacts && ln -s {box.data_dir} artifacts && ls artifacts/ >/dev/null; echo linked",
                     language="bash", results_location="ju/1")
    assert job["status"] == "succeeded", (job["stderr"], job["error"])
    assert job["artifacts"] == [] and job["skipped_artifacts"] == [{"name": ".", "reason": "symbolic link"}]
    for key in ("ju/1_artifact_files_api_token", "ju/1_artifact_files"):
        assert box.request("GET", f"/results/{key}").status == 404
    document = box.request("GET", "/results/ju/1").json()
    assert document["skipped_artifacts"] == job["skipped_artifacts"]
    stored = Path(box.env["SERVER_RESPONDER_STORE"])
    assert not any(box.token in path.read_text(errors="replace") for path in stored.rglob("*@data"))


def test_links_fifos_and_hard_links_inside_artifacts(hostile_box):
    box = hostile_box
    script = (f"ln -s {box.data_dir}/api_token artifacts/token\n"
              f"ln -s {box.data_dir} artifacts/data\n"
              "mkdir artifacts/sub && ln -s /etc artifacts/sub/etc\n"
              "mkfifo artifacts/pipe\n"
              "echo mine > mine.txt && ln mine.txt artifacts/hard.txt\n"
              f"ln {box.data_dir}/api_token artifacts/token-hard 2>/dev/null || echo no hard link to the token\n"
              "echo kept > artifacts/sub/kept.txt\n")
    job = box.submit(script, language="bash", results_location="links/1", wait=30)
    # A FIFO nobody writes to would block a reader forever: the job finished, so the service did not read it.
    assert job["status"] == "succeeded" and job["finished_at"], (job["stderr"], job["error"])
    # A hard link is a regular file like any other: what a job may link is the kernel's and the job user's matter.
    assert {a["name"] for a in job["artifacts"]} >= {"hard.txt", "sub/kept.txt"}
    assert skipped(job) == {"token": "symbolic link", "data": "symbolic link", "sub/etc": "symbolic link",
                            "pipe": "not a regular file"}
    assert box.request("GET", "/results/links/1_artifact_files_hard.txt").body == b"mine\n"
    for name in ("token", "data/api_token", "sub/etc/passwd", "pipe"):
        assert box.request("GET", f"/results/links/1_artifact_files_{name}").status == 404
    if box.env.get("SERVER_RESPONDER_JOB_USER"):
        # The job user cannot read the token, so the kernel (protected_hardlinks) refuses to link it.
        assert "no hard link to the token" in job["stdout"]
        assert {a["name"] for a in job["artifacts"]} == {"hard.txt", "sub/kept.txt"}


def test_a_2_gb_sparse_file_is_skipped_without_the_service_reading_it(make_responder):
    box = make_responder()
    growth, job = box.peak_memory_growth(lambda: box.submit(
        "truncate -s 2G artifacts/big.bin && echo small > artifacts/small.txt", language="bash",
        results_location="big/1"))
    assert job["status"] == "succeeded", (job["stderr"], job["error"])
    assert skipped(job) == {"big.bin": f"over the per-file limit ({2 * 1024 ** 3} bytes > {20 * MIB})"}
    assert [a["name"] for a in job["artifacts"]] == ["small.txt"]
    assert growth < 8 * MIB, f"the service's peak RSS grew by {growth} bytes"
    assert box.request("GET", "/results/big/1_artifact_files_big.bin").status == 404


def test_a_file_exactly_at_the_per_file_limit_is_stored_whole_and_one_byte_more_is_skipped(make_responder):
    limit = 1_000_000
    box = make_responder(artifact_file_limit_bytes=limit)
    script = (PATTERN_SCRIPT.format(size=limit, name="at-limit.bin")
              + PATTERN_SCRIPT.format(size=limit + 1, name="over.bin"))
    job = box.submit(script, results_location="limit/1")
    assert job["status"] == "succeeded", (job["stderr"], job["error"])
    assert [(a["name"], a["size"]) for a in job["artifacts"]] == [("at-limit.bin", limit)]
    assert skipped(job) == {"over.bin": f"over the per-file limit ({limit + 1} bytes > {limit})"}
    assert box.request("GET", "/results/limit/1_artifact_files_at-limit.bin").body == pattern(limit)


def test_a_30_mb_artifact_is_streamed_not_held_in_memory(make_responder):
    size = 30 * MIB
    box = make_responder(artifact_file_limit_bytes=40 * MIB)
    growth, job = box.peak_memory_growth(lambda: box.submit(
        PATTERN_SCRIPT.format(size=size, name="large.bin"), results_location="large/1"))
    assert job["status"] == "succeeded", (job["stderr"], job["error"])
    assert [(a["name"], a["size"]) for a in job["artifacts"]] == [("large.bin", size)]
    assert growth < size // 4, f"the service's peak RSS grew by {growth} bytes for a {size}-byte artifact"
    stored = Path(box.env["SERVER_RESPONDER_STORE"]) / "large" / "1_artifact_files_large.bin@data"
    assert hashlib.sha256(stored.read_bytes()).digest() == hashlib.sha256(pattern(size)).digest()


def test_the_total_and_count_limits(make_responder):
    box = make_responder(artifact_file_limit_bytes=2000, artifact_limit_bytes=3000, artifact_count_limit=3)
    sizes = {"a": 1500, "b": 1400, "c": 200, "d": 50, "e": 10}
    script = "".join(f"head -c {size} /dev/zero > artifacts/{name}\n" for name, size in sizes.items())
    job = box.submit(script, language="bash", results_location="limits/1")
    assert job["status"] == "succeeded", (job["stderr"], job["error"])
    # c would pass the job's total, d still fits after it; e is past the count.
    assert [(a["name"], a["size"]) for a in job["artifacts"]] == [("a", 1500), ("b", 1400), ("d", 50)]
    assert skipped(job) == {"c": "over the job's total limit", "e": "too many artifacts"}
    assert box.request("GET", "/results/limits/1_artifact_files_c").status == 404


def test_limits_are_settings_checked_at_start(make_responder):
    box = make_responder(start=False, artifact_count_limit=-1)
    with pytest.raises(RuntimeError, match="artifact_count_limit"):
        box.start()
