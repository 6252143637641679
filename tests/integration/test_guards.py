"""Guards of a running responder: one service per data dir, bounded signatures, no requests to link-local hosts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from git_projects import GitProject

from server_responder.signing import sign_script

CODE_SECRET = "guards-code-secret"


def gated(gate: Path) -> str:
    return f"import os, time\nwhile not os.path.exists({str(gate)!r}):\n    time.sleep(0.05)\nprint('done')"


def files_and_contents(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_a_second_service_on_the_same_data_dir_exits_at_once_changing_nothing(make_responder, tmp_path):
    first = make_responder(workers=1)
    gate = tmp_path / "gate"
    running = first.request("POST", "/jobs", body={"script": gated(gate), "timeout": 60}).json()
    queued = first.request("POST", "/jobs", body={"script": "print('queued')"}).json()
    assert first.wait_until_running(running["id"])["status"] == "running"
    before = files_and_contents(first.data_dir)

    second = subprocess.run([sys.executable, "-m", "server_responder", "serve", "--port", "0"], env=first.env,
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    assert second.returncode == 1
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and str(first.data_dir) in lines[0] and f"pid {first.process.pid}" in lines[0], lines
    assert "listening" not in second.stdout
    assert files_and_contents(first.data_dir) == before
    assert first.request("GET", f"/jobs/{running['id']}").json()["status"] == "running"
    assert first.request("GET", f"/jobs/{queued['id']}").json()["status"] == "queued"

    gate.touch()
    assert first.wait_for(running["id"])["status"] == "succeeded"
    assert first.wait_for(queued["id"])["stdout"] == "queued\n"


def test_the_lock_goes_with_a_crashed_service(make_responder):
    responder = make_responder()
    responder.kill()
    responder.start()
    assert responder.request("GET", "/health", token=False).status == 200


@pytest.mark.parametrize("expires_in", [None, 10**9])
def test_a_signature_valid_for_longer_than_the_maximum_is_refused(make_responder, expires_in):
    responder = make_responder(code_secret=CODE_SECRET, signature_max_age_seconds=3600)
    signed = sign_script(CODE_SECRET, "print(1)", "python", expires_in=expires_in)
    answer = responder.request("POST", "/jobs", body=signed.as_fields(), token=False)
    assert answer.status == 401 and "signature_max_age_seconds" in answer.json()["detail"], answer.body
    within = sign_script(CODE_SECRET, "print(1)", "python", expires_in=3000)
    assert responder.request("POST", "/jobs?wait=20", body=within.as_fields(), token=False).json()["stdout"] == "1\n"


def test_signature_max_age_zero_accepts_a_signature_that_never_expires(make_responder):
    responder = make_responder(code_secret=CODE_SECRET, signature_max_age_seconds=0)
    forever = sign_script(CODE_SECRET, "print(2)", "python", expires_in=None)
    answer = responder.request("POST", "/jobs?wait=20", body=forever.as_fields(), token=False)
    assert answer.status == 200 and answer.json()["stdout"] == "2\n"


LINK_LOCAL = ["http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/x", "http://[fd00:ec2::254]/x",
              "http://[::ffff:169.254.169.254]/x", "http://169.254.1.1:8080/put"]


@pytest.mark.parametrize("url", LINK_LOCAL)
def test_upload_urls_to_link_local_hosts_are_400_and_run_nothing(make_responder, url):
    responder = make_responder()
    for field, urls in (("upload_urls.result", {"result": url}),
                        ("upload_urls.artifacts.a.txt", {"artifacts": {"a.txt": url}})):
        answer = responder.request("POST", "/jobs", body={"script": "print(1)", "upload_urls": urls})
        assert answer.status == 400 and answer.json()["field"] == field, answer.body
    assert responder.request("GET", "/jobs").json()["jobs"] == []


@pytest.fixture
def project(tmp_path: Path) -> GitProject:
    project = GitProject(tmp_path)
    project.commit({"README": "x"})
    return project


@pytest.mark.parametrize("url", LINK_LOCAL)
def test_callback_urls_to_link_local_hosts_are_400(make_responder, project, url):
    responder = make_responder(repo_base_url=project.base_url)
    answer = responder.request("POST", "/jobs", body={"type": "command", "project": "acme/widget",
                                                       "command": "true", "callback_url": url})
    assert answer.status == 400 and answer.json()["field"] == "callback_url", answer.body
    assert "never sends" in answer.json()["detail"]


def test_refused_networks_adds_networks_and_loopback_stays_allowed(make_responder):
    responder = make_responder(refused_networks=["10.0.0.0/8", "2001:db8::/32"])
    for url in ("http://10.9.8.7/x", "http://[2001:db8::5]/x"):
        answer = responder.request("POST", "/jobs", body={"script": "print(1)", "upload_urls": {"result": url}})
        assert answer.status == 400 and answer.json()["field"] == "upload_urls.result", answer.body
    allowed = responder.request("POST", "/jobs", body={"script": "print(1)",
                                                        "upload_urls": {"result": "http://127.0.0.1:9/x"}})
    assert allowed.status == 202, allowed.body


def test_a_refused_network_that_is_not_a_network_stops_the_service_with_its_name(make_responder):
    responder = make_responder(start=False, refused_networks=["ten dot"])
    answer = subprocess.run([sys.executable, "-m", "server_responder", "serve", "--port", "0"], env=responder.env,
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    assert answer.returncode != 0 and "refused_networks" in answer.stdout + answer.stderr


@pytest.mark.parametrize("url", ["http://[::1/x", "http://[zz]/x", "http://127.0.0.1:99999999/x", "http://host:0/x",
                                 "http:///x", "ftp://127.0.0.1/x"])
def test_malformed_destinations_are_400_naming_the_field(make_responder, project, url):
    responder = make_responder(repo_base_url=project.base_url)
    upload = responder.request("POST", "/jobs", body={"script": "print(1)", "upload_urls": {"result": url}})
    assert upload.status == 400 and upload.json()["field"] == "upload_urls.result", upload.body
    callback = responder.request("POST", "/jobs", body={"type": "command", "project": "acme/widget",
                                                         "command": "true", "callback_url": url})
    assert callback.status == 400 and callback.json()["field"] == "callback_url", callback.body
