"""The appliance on real Debian 12 and 13 boxes: provisioned by ansible/site.yml, proven by tests/infra.

Each test is one step on one box; the steps run in order and a failed step skips the rest on that box.
Run them alone with `./dev test tests/boxes -v` (as root); `-m "not boxes"` leaves them out.
"""

from __future__ import annotations

import http.client
import json
import re
import secrets
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from boxes import BoxRun

pytestmark = pytest.mark.boxes

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = REPO / "ansible" / "site.yml"
ROLE_README = REPO / "ansible" / "roles" / "server_responder" / "README.md"
CERTIFICATE = "/etc/nginx/tls/server.crt"
SERVICE_USER = "server-responder"

# What differs between the boxes: the Debian 12 box also offers the optional sh language.
BOX_VARS: dict[str, dict[str, Any]] = {
    "bookworm": {"server_responder_languages": {"python": ["python3"], "bash": ["bash"], "ruby": ["ruby"],
                                                "sh": ["sh"]}},
    "trixie": {},
}
IMAGE_VARS = {"server_responder_image_build": True, "nginx_tls_image_build": True}
# The user data of the README, with values this box can use (no S3 here, and no idle stop mid-test).
USER_DATA_VALUES = {
    "SERVER_RESPONDER_API_KEY": secrets.token_urlsafe(24),
    "SERVER_RESPONDER_CODE_SECRET": secrets.token_urlsafe(24),
    "SERVER_RESPONDER_STORE": "/var/lib/server-responder/results",
    "SERVER_RESPONDER_IDLE_SHUTDOWN_MINUTES": "0",
}


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def provision(run: BoxRun, step: str, extra_vars: dict[str, Any]) -> None:
    result = run.box.playbook(PLAYBOOK, {**BOX_VARS[run.suite], **extra_vars}, run.log(step))
    run.time(f"{step} ({result.changed} changed)", result.seconds)
    assert result.returncode == 0 and result.failed == 0, (
        f"ansible-playbook exited {result.returncode}; output in {run.log(step)}\n{tail(result.output)}"
    )
    run.last_playbook = result


def host_suite(run: BoxRun, step: str, *options: str) -> None:
    argv = [sys.executable, "-m", "pytest", "tests/infra", f"--hosts=ssh://{run.box.name}",
            f"--ssh-config={run.box.ssh_config}", "-v", "-p", "no:cacheprovider", "--color=no", *options]
    started = time.monotonic()
    result = subprocess.run(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=600)
    run.time(step, time.monotonic() - started)
    run.log(step).write_text(result.stdout)
    run.outcome(step, (result.stdout.strip().splitlines() or ["no output"])[-1].strip("= "))
    print(f"\n----- {' '.join(argv[2:])}\n{result.stdout}")
    assert result.returncode == 0, f"the host suite failed on {run.box.name}; output in {run.log(step)}"


def https(run: BoxRun, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    """A request from this machine to the box's nginx, verifying its certificate (fetched over SSH)."""
    cafile = run.box.workdir / "server.crt"
    cafile.write_text(run.box.ssh(f"cat {CERTIFICATE}").stdout)
    context = ssl.create_default_context(cafile=str(cafile))
    connection = http.client.HTTPSConnection(run.box.spec.address, 443, context=context, timeout=60)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        connection.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    return response.status, json.loads(data) if data else None


def run_job(run: BoxRun, token: str, script: str) -> dict[str, Any]:
    status, job = https(run, "POST", "/jobs?wait=30",
                        {"type": "script", "language": "python", "script": script}, token)
    assert status == 200, job
    return job


def readme_user_data() -> dict[str, Any]:
    match = re.search(r"```yaml\n(#cloud-config\n.*?)```", ROLE_README.read_text(), re.S)
    assert match, f"no #cloud-config example in {ROLE_README}"
    return yaml.safe_load(match.group(1))


def with_box_values(content: str) -> str:
    lines = []
    for line in content.splitlines():
        name = line.split("=", 1)[0]
        lines.append(f"{name}={USER_DATA_VALUES[name]}" if name in USER_DATA_VALUES else line)
    return "\n".join(lines) + "\n"


def test_provision_from_scratch(box_run: BoxRun) -> None:
    with box_run.step("provision"):
        provision(box_run, "provision", {})


def test_rerun_changes_nothing(box_run: BoxRun) -> None:
    with box_run.step("rerun"):
        provision(box_run, "rerun", {})
        result = box_run.last_playbook
        assert result.changed == 0, f"changed on rerun: {result.changed_tasks()}; output in {box_run.log('rerun')}"


def test_host_suite(box_run: BoxRun) -> None:
    with box_run.step("host suite"):
        host_suite(box_run, "host suite")


def test_job_through_nginx_tls(box_run: BoxRun) -> None:
    with box_run.step("job through TLS"):
        token = box_run.box.ssh("cat /var/lib/server-responder/api_token").stdout.strip()
        job = run_job(box_run, token, "print(5 + 4)")
        assert (job["status"], job["exit_status"], job["stdout"]) == ("succeeded", 0, "9\n"), job


def test_image_build_leaves_no_secret(box_run: BoxRun) -> None:
    with box_run.step("image build"):
        provision(box_run, "image build", IMAGE_VARS)
        host_suite(box_run, "image host suite", "--image")


def test_user_data_and_restart(box_run: BoxRun) -> None:
    """The README's cloud-init user data, then a power-off through the service's own rule, then a boot."""
    box = box_run.box
    with box_run.step("user data and restart"):
        for entry in readme_user_data()["write_files"]:
            box.write_file(entry["path"], with_box_values(entry["content"]), entry["owner"], entry["permissions"])
        box.ssh(f"systemd-run --uid={SERVICE_USER} --unit=sr-box-poweroff systemctl poweroff", check=False)
        started = time.monotonic()
        if box.wait_stopped(90) is None:
            journal = box.ssh("journalctl --no-pager -u sr-box-poweroff", check=False).stdout
            pytest.fail(f"the service user could not power the box off:\n{journal}")
        box.process = None
        box_run.time("power off through the service user's rule, boot", time.monotonic() - started + box.boot())
        active = box.ssh("systemctl is-active server-responder", check=False).stdout.strip()
        assert active == "active", box.ssh("journalctl --no-pager -b -u server-responder", check=False).stdout


def test_job_with_user_data_key(box_run: BoxRun) -> None:
    with box_run.step("job with the user data key"):
        job = run_job(box_run, USER_DATA_VALUES["SERVER_RESPONDER_API_KEY"],
                      "import os, json; print(json.dumps(dict(os.environ)))")
        assert job["status"] == "succeeded", job
        environment = json.loads(job["stdout"])
        leaked = [name for name, value in environment.items()
                  if name.startswith(("AWS_", "SERVER_RESPONDER_")) or value in USER_DATA_VALUES.values()]
        assert leaked == [], environment


def test_service_has_what_jobs_must_not(box_run: BoxRun) -> None:
    """The job's clean environment above means something: the service itself holds the key and AWS_ settings."""
    with box_run.step("service environment"):
        pid = box_run.box.ssh("systemctl show -p MainPID --value server-responder").stdout.strip()
        names = {entry.split("=", 1)[0]
                 for entry in box_run.box.ssh(f"tr '\\0' '\\n' < /proc/{pid}/environ").stdout.splitlines()}
        assert {"SERVER_RESPONDER_API_KEY", "AWS_DEFAULT_REGION"} <= names, names
