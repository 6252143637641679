"""A real responder on a data dir that fills up or turns read-only: it stays truthful and never gets stuck.

The faults are real: a small tmpfs mounted as the data dir, filled with a file or remounted read-only.
Mounting needs root; elsewhere these tests are skipped.
"""

import errno
import json
import os
import subprocess
import threading
import urllib.parse
import uuid
from pathlib import Path

import pytest

from server_responder.projects.github import sign

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs as the data dir needs root")

TOKEN = "storage-fault-test-token"


class Disk:
    """A tmpfs of a few megabytes: `fill` uses up every block, `read_only` remounts it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / "filler"

    def data_dir(self) -> Path:
        data = self.path / "data"
        data.mkdir(exist_ok=True)
        return data

    def fill(self) -> None:
        descriptor = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            # Big writes, then ever smaller ones for the last pages, until not one byte more fits.
            for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
                while True:
                    try:
                        os.write(descriptor, b"\0" * size)
                    except OSError as error:
                        assert error.errno == errno.ENOSPC
                        break
        finally:
            os.close(descriptor)

    def free(self) -> None:
        self.filler.unlink()

    def read_only(self, on: bool = True) -> None:
        subprocess.run(["mount", "-o", f"remount,{'ro' if on else 'rw'}", str(self.path)], check=True)


@pytest.fixture
def disk(tmp_path: Path):
    path = tmp_path / "disk"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs", str(path)], check=True)
    disk = Disk(path)
    try:
        yield disk
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(path)], check=False)
        if subprocess.run(["umount", str(path)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=False)


def form(fields: dict) -> bytes:
    return urllib.parse.urlencode(fields).encode()


def wait_script(flag: Path) -> str:
    return f"import os, time\nwhile not os.path.exists({str(flag)!r}):\n    time.sleep(0.02)\n"


def test_jobs_finishing_on_a_full_disk_fail_truthfully_and_leave_nothing_stuck(disk, make_responder, tmp_path):
    # Workspaces on another disk: a finished job's removed files never free the pages the next result needs.
    responder = make_responder(workers=1, data_dir=disk.path / "data", store=disk.path / "results", api_key=TOKEN,
                               work_dir=tmp_path / "work")
    flag = tmp_path / "go"
    first = responder.submit(wait_script(flag), wait=0, language="python", timeout=60)
    queued = [responder.submit("print('hi')", wait=0, language="python")["id"] for _ in range(28)]
    waited: list = []
    waiter = threading.Thread(target=lambda: waited.append(
        responder.request("POST", "/jobs?wait=120", body={"script": "print(1)", "language": "python"})))
    waiter.start()
    try:
        responder.wait_until_running(first["id"])
        disk.fill()
    finally:
        flag.touch()
    ids = [first["id"], *queued]
    jobs = [responder.wait_for(job_id, timeout=60) for job_id in ids]
    waiter.join(60)
    [answer] = waited
    jobs.append(answer.json())
    assert answer.status == 200 and answer.json()["status"] == "failed", answer.body
    assert len(jobs) == 30
    for job in jobs:
        assert job["status"] == "failed", job
        assert job["finished_at"] and "result not stored" in job["error"] and "is full" in job["error"]
    # Once the journal's last page was used up it could not take the final records either, and they say so.
    unsaved = [job for job in jobs if "record_not_saved" in job["details"]]
    assert unsaved and jobs[-1] in unsaved
    assert all("kept in memory only" in job["details"]["record_not_saved"] for job in unsaved)
    health = responder.request("GET", "/health").json()
    assert health["running_jobs"] == 0 and health["queued_jobs"] == 0
    assert health["status"] == "degraded" and any("is full" in reason for reason in health["degraded"])
    # Removing the stale records freed a few pages; used up again, the disk takes no job at all.
    disk.fill()
    refused = responder.request("POST", "/jobs?wait=10", body={"script": "print(1)", "language": "python"})
    assert refused.status == 507 and refused.json()["error"] == "insufficient_storage"
    assert f"the data dir {disk.path / 'data'} is full" in refused.json()["detail"]
    drain = responder.request("POST", "/drain?wait=30")
    assert drain.status == 200 and drain.json()["drained"] is True

    disk.free()
    assert responder.request("DELETE", "/drain").status == 200
    job = responder.submit("print('back')", wait=30, language="python", results_location="after/full")
    assert job["status"] == "succeeded" and job["stdout"] == "back\n"
    assert responder.request("GET", "/results/after/full").json()["status"] == "succeeded"
    health = responder.request("GET", "/health").json()
    assert health["status"] == "ok" and health["degraded"] == []


def test_a_read_only_data_dir_refuses_jobs_with_507_and_still_drains(disk, make_responder, tmp_path):
    responder = make_responder(data_dir=disk.data_dir(), github_secret="hook-secret", api_key=TOKEN)
    assert responder.submit("print(1)", language="python")["status"] == "succeeded"
    disk.read_only()
    place = f"the data dir {disk.path / 'data'} is read-only"

    answer = responder.request("POST", "/jobs?wait=5", body={"script": "print(1)", "language": "python"})
    assert answer.status == 507 and answer.headers["Content-Type"] == "application/json"
    assert answer.json() == {"error": "insufficient_storage", "detail": f"{place} (Read-only file system)"}
    payload = json.dumps({"script_payload": "print(1)", "language": "python"})
    legacy = responder.request("POST", "/", data=form({"api_token": responder.token, "payload": payload}),
                               headers={"Content-Type": "application/x-www-form-urlencoded"}, token=False)
    assert legacy.status == 507 and legacy.json()["error"] == "insufficient_storage"
    body = json.dumps({"ref": "refs/heads/main", "after": "a" * 40,
                       "repository": {"full_name": "acme/widget", "name": "widget", "owner": {"login": "acme"}},
                       "head_commit": {"id": "a" * 40}}).encode()
    hook = responder.request("POST", "/github", data=body, token=False, headers={
        "Content-Type": "application/json", "X-GitHub-Event": "push", "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": sign("hook-secret", body)})
    assert hook.status == 507 and hook.json()["error"] == "insufficient_storage", hook.body
    listed = responder.request("GET", "/jobs").json()
    assert len(listed["jobs"]) == 1 and listed["queued_jobs"] == 0 and listed["running_jobs"] == 0

    health = responder.request("GET", "/health").json()
    assert health["status"] == "degraded" and health["degraded"] == [f"{place} (Read-only file system)"]
    drain = responder.request("POST", "/drain?wait=10")
    assert drain.status == 200 and drain.json()["drained"] is True
    assert responder.request("GET", "/health").json()["accepting"] is False
    assert responder.request("POST", "/jobs", body={"script": "print(1)", "language": "python"}).status == 503
    assert responder.request("DELETE", "/drain").status == 200

    disk.read_only(False)
    job = responder.submit("print('writable')", language="python")
    assert job["status"] == "succeeded" and job["stdout"] == "writable\n"
    health = responder.request("GET", "/health").json()
    assert health["status"] == "ok" and health["degraded"] == [] and health["accepting"] is True
