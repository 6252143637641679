"""The reaper against the EC2 API of moto's standalone server, with real responders standing in for instances."""

import json
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.moto_server import instance_state as state_of

TAG = "server-responder"


def loopback(responder) -> str:
    return responder.url.removeprefix("http://")


def reap(env, state_file: Path, overrides: dict[str, str], *args: str) -> tuple[int, dict[str, dict], str]:
    argv = [sys.executable, "-m", "server_responder", "reap", "--tag-key", TAG, "--scheme", "http",
            "--state-file", str(state_file), "--timeout", "20", *args]
    for instance_id, address in overrides.items():
        argv += ["--address-override", f"{instance_id}={address}"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    return done.returncode, {line["id"]: line for line in lines}, done.stderr


def wait_idle(responder, seconds: float) -> None:
    deadline = time.monotonic() + 60
    while responder.request("GET", "/last_job", token=False).json()["idle_seconds"] < seconds:
        assert time.monotonic() < deadline, "responder never became idle"
        time.sleep(0.1)


def start_gated_job(responder, gate: Path) -> dict:
    script = f"import os, time\nwhile not os.path.exists({str(gate)!r}):\n    time.sleep(0.05)\n"
    job = responder.request("POST", "/jobs", body={"script": script, "timeout": 120}).json()
    deadline = time.monotonic() + 60
    while responder.request("GET", "/last_job", token=False).json()["running_jobs"] != 1:
        assert time.monotonic() < deadline, "job never started"
        time.sleep(0.1)
    return job


def test_idle_stopped_busy_kept_unreachable_kept_until_the_threshold(ec2, launch, aws_env, make_responder, dead_address,
                                                                    tmp_path):
    idle_box, busy_box, untagged_box = make_responder(), make_responder(), make_responder()
    idle_id, busy_id, unreachable_id = (launch({TAG: "responder"}) for _ in range(3))
    untagged_id = launch()
    gate = tmp_path / "gate"
    busy_job = start_gated_job(busy_box, gate)
    wait_idle(idle_box, 1.0)
    wait_idle(untagged_box, 1.0)
    overrides = {idle_id: loopback(idle_box), busy_id: loopback(busy_box),
                 unreachable_id: dead_address, untagged_id: loopback(untagged_box)}
    state_file = tmp_path / "reaper-state.json"

    status, reports, stderr = reap(aws_env, state_file, overrides, "--idle-minutes", "0.01")
    assert status == 0, stderr
    assert set(reports) == {idle_id, busy_id, unreachable_id}
    assert reports[idle_id]["verdict"] == "stopped" and "idle" in reports[idle_id]["reason"]
    assert reports[busy_id]["verdict"] == "kept" and "busy" in reports[busy_id]["reason"]
    assert reports[unreachable_id]["verdict"] == "kept" and "unreachable" in reports[unreachable_id]["reason"]
    for report in reports.values():
        assert report["address"] and report["url"].startswith("http://127.0.0.1:")
    assert state_of(ec2, idle_id) in ("stopping", "stopped")
    assert [state_of(ec2, i) for i in (busy_id, unreachable_id, untagged_id)] == ["running"] * 3
    assert busy_box.request("GET", f"/jobs/{busy_job['id']}", token=False).json()["status"] == "running"
    remembered = json.loads(state_file.read_text())["unreachable"]
    assert set(remembered) == {unreachable_id}

    # A second poll shortly after: still inside the unreachable threshold, still kept.
    status, reports, _ = reap(aws_env, state_file, overrides, "--idle-minutes", "0.01")
    assert reports[unreachable_id]["verdict"] == "kept" and state_of(ec2, unreachable_id) == "running"
    assert reports[unreachable_id]["unreachable_since"] == remembered[unreachable_id]["since"]

    # Time passes: the first failure is now 31 minutes old.
    long_ago = datetime.now(timezone.utc) - timedelta(minutes=31)
    remembered[unreachable_id]["since"] = long_ago.isoformat(timespec="seconds").replace("+00:00", "Z")
    state_file.write_text(json.dumps({"unreachable": remembered}))
    status, reports, stderr = reap(aws_env, state_file, overrides, "--idle-minutes", "0.01")
    assert status == 0, stderr
    assert set(reports) == {busy_id, unreachable_id}
    assert reports[unreachable_id]["verdict"] == "stopped" and "unreachable for 31" in reports[unreachable_id]["reason"]
    assert reports[busy_id]["verdict"] == "kept"
    assert state_of(ec2, unreachable_id) in ("stopping", "stopped")
    assert [state_of(ec2, i) for i in (busy_id, untagged_id)] == ["running"] * 2
    assert json.loads(state_file.read_text())["unreachable"] == {}
    gate.touch()


def test_dry_run_stops_nothing_and_remembers_nothing(ec2, launch, aws_env, make_responder, dead_address, tmp_path):
    idle_box = make_responder()
    idle_id, unreachable_id = launch({TAG: "responder"}), launch({TAG: "responder"})
    wait_idle(idle_box, 1.0)
    state_file = tmp_path / "reaper-state.json"
    long_ago = (datetime.now(timezone.utc) - timedelta(hours=2)).isoformat(timespec="seconds")
    state_file.write_text(json.dumps({"unreachable": {unreachable_id: {"since": long_ago}}}))
    before = state_file.read_text()
    overrides = {idle_id: loopback(idle_box), unreachable_id: dead_address}
    status, reports, stderr = reap(aws_env, state_file, overrides, "--idle-minutes", "0.01", "--dry-run", "--drain")
    assert status == 0, stderr
    assert reports[idle_id]["verdict"] == "would_stop" and reports[unreachable_id]["verdict"] == "would_stop"
    assert [state_of(ec2, i) for i in (idle_id, unreachable_id)] == ["running", "running"]
    assert state_file.read_text() == before
    assert idle_box.request("GET", "/last_job", token=False).json()["draining"] is False


def test_drain_before_stopping(ec2, launch, aws_env, make_responder, tmp_path):
    box = make_responder()
    instance_id = launch({TAG: "responder"})
    wait_idle(box, 1.0)
    token_file = tmp_path / "token"
    token_file.write_text(box.token + "\n")
    state_file = tmp_path / "reaper-state.json"
    status, _, stderr = reap(aws_env, state_file, {instance_id: loopback(box)}, "--idle-minutes", "0.01", "--drain")
    assert status == 2 and "--drain needs the API token" in stderr
    assert state_of(ec2, instance_id) == "running"

    status, reports, stderr = reap(aws_env, state_file, {instance_id: loopback(box)}, "--idle-minutes", "0.01",
                                   "--drain", "--token-file", str(token_file))
    assert status == 0, stderr
    assert reports[instance_id]["verdict"] == "stopped"
    # The report shows the box as the drain left it.
    assert reports[instance_id]["draining"] is True and reports[instance_id]["drained"] is True
    assert state_of(ec2, instance_id) in ("stopping", "stopped")
    answer = box.request("GET", "/last_job", token=False).json()
    assert answer["draining"] is True and answer["drained"] is True
    assert box.request("POST", "/jobs", body={"script": "print(1)"}).status == 503


def test_a_refused_drain_keeps_the_instance(ec2, launch, aws_env, make_responder, tmp_path):
    box = make_responder()
    instance_id = launch({TAG: "responder"})
    wait_idle(box, 1.0)
    token_file = tmp_path / "token"
    token_file.write_text("not-the-token")
    status, reports, _ = reap(aws_env, tmp_path / "state.json", {instance_id: loopback(box)}, "--idle-minutes",
                              "0.01", "--drain", "--token-file", str(token_file))
    assert status == 0
    assert reports[instance_id]["verdict"] == "kept" and "HTTP 401" in reports[instance_id]["reason"]
    assert state_of(ec2, instance_id) == "running"


def test_tag_value_selects_instances_and_a_recovered_instance_is_forgotten(ec2, launch, aws_env, make_responder,
                                                                          dead_address, tmp_path):
    box = make_responder()
    blue, green = launch({TAG: "blue"}), launch({TAG: "green"})
    state_file = tmp_path / "reaper-state.json"
    status, reports, _ = reap(aws_env, state_file, {blue: dead_address}, "--tag-value", "blue")
    assert status == 0 and set(reports) == {blue}
    assert set(json.loads(state_file.read_text())["unreachable"]) == {blue}
    status, reports, _ = reap(aws_env, state_file, {blue: loopback(box)}, "--tag-value", "blue")
    assert reports[blue]["verdict"] == "kept" and "idle for" in reports[blue]["reason"]
    assert json.loads(state_file.read_text())["unreachable"] == {}
    assert [state_of(ec2, i) for i in (blue, green)] == ["running", "running"]


def test_aws_errors_give_a_non_zero_exit(aws_env, dead_address, tmp_path):
    env = {**aws_env, "AWS_ENDPOINT_URL": f"http://{dead_address}", "AWS_MAX_ATTEMPTS": "1"}
    status, reports, stderr = reap(env, tmp_path / "state.json", {})
    assert status == 1 and reports == {}
    assert "listing instances failed" in stderr
