"""A real `serve` keeps its own threads on one CPU and gives every process it starts all of them back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import RunningResponder, responder_env

pytestmark = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning needs more than one CPU")
EVERY_CPU = frozenset(os.sched_getaffinity(0))
LAST_CPU = frozenset({max(EVERY_CPU)})


def cpu_list(listed: str) -> frozenset[int]:
    """`0-3,6` as the set of CPUs it names."""
    cpus: set[int] = set()
    for part in listed.strip().split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return frozenset(cpus)


def cpus_of(pid: int | str, thread: int | str | None = None) -> frozenset[int]:
    status = Path(f"/proc/{pid}" + (f"/task/{thread}" if thread is not None else "") + "/status").read_text()
    return cpu_list(next(line.split(":", 1)[1] for line in status.splitlines()
                         if line.startswith("Cpus_allowed_list:")))


def threads_cpus(pid: int) -> set[frozenset[int]]:
    return {cpus_of(pid, task.name) for task in Path(f"/proc/{pid}/task").iterdir()}


def job_cpus(responder: RunningResponder) -> frozenset[int]:
    job = responder.submit("grep Cpus_allowed_list /proc/self/status", language="sh")
    assert job["status"] == "succeeded", job["stderr"]
    return cpu_list(job["stdout"].split(":", 1)[1])


def test_the_service_runs_on_one_cpu_and_its_jobs_on_every_one(tmp_path):
    responder = RunningResponder(tmp_path / "data", responder_env(tmp_path, workers=2)).start()
    try:
        assert job_cpus(responder) == EVERY_CPU
        service = responder.process.pid
        # Its threads, those started since (HTTP, job workers) included, share the last CPU.
        assert threads_cpus(service) == {LAST_CPU}
        assert cpus_of(responder.launcher_pid()) == EVERY_CPU
        records = [json.loads(line) for line in responder.log_file.read_text().splitlines()]
        pinned, = (record for record in records if record.get("event") == "service.pinned")
        assert (pinned["cpu"], pinned["job_cpus"]) == (max(EVERY_CPU), sorted(EVERY_CPU))
    finally:
        responder.stop()


def test_without_pinning_the_service_keeps_every_cpu(tmp_path):
    responder = RunningResponder(tmp_path / "data", responder_env(tmp_path, pin_service_cpu="false")).start()
    try:
        assert job_cpus(responder) == EVERY_CPU
        assert threads_cpus(responder.process.pid) == {EVERY_CPU}
    finally:
        responder.stop()


def test_git_run_by_a_pinned_service_gets_every_cpu(tmp_path):
    # In a process of its own: pinning is for the whole process.
    program = (
        "import sys; from pathlib import Path\n"
        "from server_responder.jobs.affinity import pin_service\n"
        "from server_responder.projects.git import Git\n"
        "pinned = pin_service()\n"
        "alias = 'alias.cpus=!grep Cpus_allowed_list /proc/$$/status'\n"
        "print(pinned, Git(Path(sys.argv[1]), 30)(['-c', alias, 'cpus']).split(':', 1)[1].strip())\n"
    )
    done = subprocess.run([sys.executable, "-c", program, str(tmp_path)], capture_output=True, text=True,
                          timeout=60, check=True)
    pinned, listed = done.stdout.split()
    assert int(pinned) == max(EVERY_CPU) and cpu_list(listed) == EVERY_CPU


@pytest.mark.skipif(os.geteuid() != 0, reason="a service started as nobody, with no cgroup, needs root to start")
def test_jobs_started_by_the_service_itself_get_every_cpu(tmp_path):
    from tests.integration.test_containment import start_responder

    # Started as nobody, the service has no cgroup to use: it starts jobs itself (the subreaper strategy).
    responder = start_responder(tmp_path, "subreaper")
    try:
        assert responder.request("GET", "/health").json()["containment"]["kind"] == "subreaper"
        assert threads_cpus(responder.process.pid) == {LAST_CPU}
        assert job_cpus(responder) == EVERY_CPU
    finally:
        responder.stop()
