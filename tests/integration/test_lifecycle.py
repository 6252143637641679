"""The idle lifecycle of a real responder: the last-job record, draining, and stopping itself."""

import json
import sys
import time
from pathlib import Path

import pytest

from server_responder.lifecycle.drain import BOOT_ID_PATH

# Minutes as small floats: a threshold of 0.01 minutes is 0.6 s, checked every 0.2 s.
FAST_IDLE = {"idle_shutdown_minutes": 0.01, "idle_boot_grace_minutes": 0, "idle_check_seconds": 0.2}
RECORD_CALL = "import sys; open(sys.argv[1], 'a').write('poweroff\\n')"


def gated(gate: Path, output: str = "done") -> str:
    """A script that runs until the test opens its gate: a job that is running for as long as needed, no longer."""
    return (f"import os, time\nwhile not os.path.exists({str(gate)!r}):\n    time.sleep(0.05)\n"
            f"print({output!r})")


def shutdown_recorder(marker: Path) -> list[str]:
    return [sys.executable, "-c", RECORD_CALL, str(marker)]


def log_events(responder, event: str) -> list[dict]:
    if not responder.log_file.exists():
        return []
    records = []
    for line in responder.log_file.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == event:
            records.append(record)
    return records


def wait_until(condition, timeout: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached in {timeout}s")


def last_job(responder) -> dict:
    return responder.request("GET", "/last_job", token=False).json()


def submit_async(responder, script: str) -> dict:
    answer = responder.request("POST", "/jobs", body={"script": script, "timeout": 60})
    assert answer.status == 202, answer.body
    return answer.json()


def test_last_job_reports_busy_then_idle_and_survives_a_restart(make_responder, tmp_path):
    responder = make_responder(workers=1)
    fresh = last_job(responder)
    assert fresh["last_started"] is None and fresh["last_finished"] is None and fresh["last_time"] is None
    assert fresh["idle_seconds"] >= 0 and fresh["draining"] is False and fresh["drained"] is False
    gate = tmp_path / "gate"
    job = submit_async(responder, gated(gate))
    busy = wait_until(lambda: (d := last_job(responder))["last_started"] and d, what="job started")
    assert busy["running_jobs"] == 1 and busy["idle_seconds"] == 0 and busy["last_finished"] is None
    gate.touch()
    responder.wait_for(job["id"])
    done = last_job(responder)
    assert done["running_jobs"] == 0 and done["queued_jobs"] == 0
    assert done["last_finished"] >= done["last_started"] and done["last_time"] == done["last_finished"]
    responder.stop()
    responder.start()
    again = last_job(responder)
    for key in ("last_time", "last_started", "last_finished"):
        assert again[key] == done[key]
    assert again["booted_at"] >= done["booted_at"]


def test_drain_refuses_new_jobs_and_finishes_running_and_queued_ones(make_responder, tmp_path):
    responder = make_responder(workers=1)
    gate = tmp_path / "gate"
    running = submit_async(responder, gated(gate, "first"))
    queued = submit_async(responder, "print('second')")
    wait_until(lambda: last_job(responder)["running_jobs"] == 1, what="job running")

    assert responder.request("POST", "/drain", token=False).status == 401
    answer = responder.request("POST", "/drain")
    assert answer.status == 202
    state = answer.json()
    assert (state["draining"], state["drained"], state["running_jobs"], state["queued_jobs"]) == (True, False, 1, 1)
    refused = responder.request("POST", "/jobs", body={"script": "print(3)"})
    assert refused.status == 503 and refused.json()["error"] == "not_accepting"
    assert int(refused.headers["Retry-After"]) > 0
    assert last_job(responder)["drained"] is False

    gate.touch()
    assert responder.wait_for(running["id"])["stdout"] == "first\n"
    assert responder.wait_for(queued["id"])["stdout"] == "second\n"
    drained = last_job(responder)
    assert drained["draining"] is True and drained["drained"] is True
    assert responder.request("POST", "/drain?wait=5").status == 200

    assert responder.request("DELETE", "/drain", token=False).status == 401
    resumed = responder.request("DELETE", "/drain")
    assert resumed.status == 200 and resumed.json()["draining"] is False
    assert responder.submit("print(4)")["stdout"] == "4\n"


def test_drain_waits_when_asked(make_responder, tmp_path):
    responder = make_responder(workers=1)
    gate = tmp_path / "gate"
    job = submit_async(responder, gated(gate))
    wait_until(lambda: last_job(responder)["running_jobs"] == 1, what="job running")
    assert responder.request("POST", "/drain?wait=0.5").status == 202
    gate.touch()
    answer = responder.request("POST", "/drain?wait=30")
    assert answer.status == 200 and answer.json()["drained"] is True
    assert responder.wait_for(job["id"])["status"] == "succeeded"
    assert responder.request("POST", "/drain?wait=-1").json()["field"] == "wait"


@pytest.mark.skipif(not BOOT_ID_PATH.exists(), reason="needs the kernel's boot id")
def test_drain_survives_a_restart_of_the_service(responder):
    assert responder.request("POST", "/drain").status == 200
    responder.stop()
    responder.start()
    assert last_job(responder)["draining"] is True
    assert responder.request("POST", "/jobs", body={"script": "print(1)"}).status == 503
    assert responder.request("DELETE", "/drain").status == 200
    assert responder.submit("print(1)")["status"] == "succeeded"


def test_idle_box_drains_and_runs_the_shutdown_command_once(make_responder, tmp_path):
    marker = tmp_path / "poweroff-called"
    responder = make_responder(shutdown_command=shutdown_recorder(marker), **FAST_IDLE)
    wait_until(marker.exists, what="shutdown command run")
    state = last_job(responder)
    assert state["draining"] is True and state["drained"] is True
    assert responder.request("POST", "/jobs", body={"script": "print(1)"}).status == 503
    shutdown = log_events(responder, "idle.shutdown")
    assert len(shutdown) == 1 and shutdown[0]["reason"] == "idle"
    assert shutdown[0]["idle_seconds"] >= shutdown[0]["threshold_seconds"] == 0.6
    # Later checks see that the command already ran and leave it at one call.
    wait_until(lambda: len([e for e in log_events(responder, "idle.check")
                            if e["reason"] == "shutdown_command_already_run"]) >= 3, what="later checks")
    assert marker.read_text() == "poweroff\n"


def test_self_stop_never_fires_while_a_job_is_queued_or_running(make_responder, tmp_path):
    marker = tmp_path / "poweroff-called"
    gate = tmp_path / "gate"
    responder = make_responder(workers=1)
    submit_async(responder, gated(gate, "interrupted"))
    waiting = submit_async(responder, gated(gate, "kept"))
    wait_until(lambda: last_job(responder)["running_jobs"] == 1, what="job running")
    # A graceful stop keeps the queued job in the spool: the box comes back up busy, with nothing to race.
    responder.stop()
    responder.env.update({f"SERVER_RESPONDER_{key.upper()}": str(value) for key, value in FAST_IDLE.items()})
    responder.env["SERVER_RESPONDER_SHUTDOWN_COMMAND"] = json.dumps(shutdown_recorder(marker))
    responder.start()

    def busy_checks_past_the_threshold():
        return len([e for e in log_events(responder, "idle.check")
                    if e["reason"] == "busy" and e["uptime_seconds"] >= 3 * e["threshold_seconds"]]) >= 3

    wait_until(busy_checks_past_the_threshold, what="busy checks")
    assert not marker.exists()
    assert last_job(responder)["draining"] is False
    gate.touch()
    assert responder.wait_for(waiting["id"])["stdout"] == "kept\n"
    wait_until(marker.exists, what="shutdown once the job ended")


def test_self_stop_waits_for_the_boot_grace(make_responder, tmp_path):
    marker = tmp_path / "poweroff-called"
    responder = make_responder(shutdown_command=shutdown_recorder(marker),
                               **{**FAST_IDLE, "idle_boot_grace_minutes": 60})
    wait_until(lambda: len([e for e in log_events(responder, "idle.check")
                            if e["reason"] == "boot_grace" and e["idle_seconds"] >= 2 * e["threshold_seconds"]]) >= 2,
               what="checks during the boot grace")
    assert not marker.exists()
    assert last_job(responder)["draining"] is False
    assert responder.submit("print(1)")["status"] == "succeeded"


def test_max_lifetime_stops_the_box_even_with_idle_shutdown_off(make_responder, tmp_path):
    marker = tmp_path / "poweroff-called"
    responder = make_responder(shutdown_command=shutdown_recorder(marker), max_lifetime_minutes=0.01,
                               idle_check_seconds=0.2)
    wait_until(marker.exists, what="shutdown at the end of the lifetime")
    assert [e["reason"] for e in log_events(responder, "idle.shutdown")] == ["max_lifetime"]
    assert last_job(responder)["draining"] is True


def test_a_failing_shutdown_command_leaves_the_box_working(make_responder, tmp_path):
    responder = make_responder(shutdown_command=[sys.executable, "-c", "import sys; sys.exit('not permitted')"],
                               **FAST_IDLE)
    failure = wait_until(lambda: log_events(responder, "idle.shutdown_failed"), what="failed shutdown")
    assert "not permitted" in failure[0]["detail"]
    assert last_job(responder)["draining"] is False
    assert responder.submit("print(1)")["status"] == "succeeded"


def test_idle_watch_is_off_by_default(responder):
    assert responder.submit("print(1)")["status"] == "succeeded"
    responder.stop()
    assert log_events(responder, "idle.watch_off")
    assert not log_events(responder, "idle.check")
