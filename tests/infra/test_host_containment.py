"""Jobs are contained: nothing a job starts outlives it or the service, and its cgroup's limits hold wherever
the box has the controllers (a VM or an instance: cgroup v2 with every controller)."""

import errno
import json

import pytest

from appliance_host import (
    JOB_USER, JOBS_CGROUP, CGROUP_KIND_PREFIX, LIMIT_VARIABLES, MEMORY_LIMIT, OOM_KILLED, PEAK_MEMORY, PIDS_LIMIT,
    SERVICE_CGROUP, SERVICE_USER, UNIT, WORK_DIR, marker, wait_until,
)

# Long enough for a slow (emulated) VM, short next to what a surviving process would live.
GONE_SECONDS = 20
RESTART_SECONDS = 60
# Ways a job's script puts a process out of its reach; each prints the PID it started.
DAEMONS = {
    "setsid": "setsid sh -c 'sleep {mark}; echo alive' >/dev/null 2>&1 </dev/null & echo $!",
    "double fork": "( sleep {mark} >/dev/null 2>&1 </dev/null & echo $! )",
    "own process group": "set -m; nohup sleep {mark} >/dev/null 2>&1 </dev/null & echo $!",
}
# How a job ends: what follows its daemon's start, its timeout, its final status.
ENDINGS = {"ends": ("", None, "succeeded"), "times out": ("; sleep 100", 3, "timed_out")}
# Small limits the tests set through the boot-time env file: far below the box's memory and process count.
SMALL_MEMORY = 64 * 1024 * 1024
SMALL_PIDS = 64
# Takes memory in touched 1 MiB pieces up to the given bytes, then says so.
ALLOCATE = """
chunks = []
while len(chunks) < {mib}:
    chunks.append(b"x" * (1 << 20))
print("allocated", len(chunks))
"""
# Forks sleeping children until fork fails (or far past the limit), prints how many and why, then waits.
FORK_LOOP = """
import os, time
forked, reason = 0, 0
while forked < {attempts}:
    try:
        child = os.fork()
    except OSError as error:
        reason = error.errno
        break
    if child == 0:
        time.sleep(600)
        os._exit(0)
    forked += 1
print(forked, reason, flush=True)
time.sleep(600)
"""


def started_pid(job):
    """The PID the job printed: proof that its daemon was started at all."""
    assert job["stdout"].strip().isdigit(), job
    return int(job["stdout"])


@pytest.mark.parametrize(("daemon", "ending"), [(name, "ends") for name in sorted(DAEMONS)] + [("setsid", "times out")])
def test_daemon_of_a_job_is_gone_when_the_job_ends(appliance, daemon, ending):
    script_tail, timeout, status = ENDINGS[ending]
    mark = marker()
    job = appliance.job(DAEMONS[daemon].format(mark=mark) + script_tail, "bash", timeout=timeout)
    assert job["status"] == status, job
    started_pid(job)
    appliance.wait_gone(mark, GONE_SECONDS, f"the {daemon} daemon of job {job['id']} ({ending}) gone")


def test_daemon_of_a_job_is_gone_when_the_job_is_cancelled(appliance):
    mark = marker()
    job = appliance.job(DAEMONS["setsid"].format(mark=mark) + "; sleep 100", "bash", wait=0)
    wait_until(lambda: appliance.processes_with(mark), RESTART_SECONDS, f"job {job['id']} started its daemon")
    cancel = appliance.request("DELETE", f"/jobs/{job['id']}")
    assert cancel.status in (200, 202), cancel.body
    assert appliance.finished_job(job["id"], RESTART_SECONDS)["status"] == "cancelled"
    appliance.wait_gone(mark, GONE_SECONDS, f"the daemon of the cancelled job {job['id']} gone")


@pytest.mark.parametrize("kill", ["systemctl kill -s KILL", "kill -9 of the main process"])
def test_nothing_of_a_job_survives_a_killed_service(host, appliance, kill):
    daemon, worker = marker(), marker()
    job = appliance.job(f"setsid sh -c 'sleep {daemon}' >/dev/null 2>&1 </dev/null & sleep {worker}", "bash",
                        timeout=900, wait=0)
    workspace = host.file(f"{WORK_DIR}/{job['id']}")
    wait_until(lambda: appliance.processes_with(daemon) and appliance.processes_with(worker), RESTART_SECONDS,
               f"job {job['id']} running with its daemon")
    assert workspace.is_directory
    service = appliance.service_pid()
    host.run(f"systemctl reset-failed {UNIT}")
    if kill == "systemctl kill -s KILL":
        host.run_expect([0], f"systemctl kill -s KILL {UNIT}")
    else:
        host.run_expect([0], f"kill -9 {service}")
    wait_until(lambda: appliance.service_answers(not_pid=service), RESTART_SECONDS, f"{UNIT} restarted")
    assert appliance.processes_with(daemon) + appliance.processes_with(worker) == []
    assert appliance.finished_job(job["id"], RESTART_SECONDS)["status"] == "interrupted"
    wait_until(lambda: not workspace.exists, GONE_SECONDS, f"the workspace of job {job['id']} removed")


def test_health_says_jobs_get_a_cgroup_each_and_their_own_user(appliance):
    containment = appliance.containment()
    assert str(containment.get("kind", "")).startswith(CGROUP_KIND_PREFIX), containment
    assert (containment.get("job_user"), containment.get("jobs_share_service_user")) == (JOB_USER, False), containment


def test_service_runs_in_its_own_cgroup_below_the_unit(appliance):
    assert appliance.cgroup_of(appliance.service_pid()) == f"{appliance.unit_cgroup()}/{SERVICE_CGROUP}"


def test_unit_cgroup_is_delegated_to_the_service_user(host, appliance):
    directory = host.file(f"{appliance.cgroup2_mount()}{appliance.unit_cgroup()}")
    assert (directory.user, host.file(f"{directory.path}/cgroup.procs").user) == (SERVICE_USER, SERVICE_USER)


def test_job_runs_in_its_own_cgroup(appliance):
    mark = marker()
    job = appliance.job(f"exec sleep {mark}", "bash", timeout=900, wait=0)
    try:
        pids = wait_until(lambda: appliance.processes_with(mark), RESTART_SECONDS, f"job {job['id']} running")
        assert [appliance.cgroup_of(pid) for pid in pids] == [
            f"{appliance.unit_cgroup()}/{JOBS_CGROUP}/{job['id']}"]
    finally:
        appliance.request("DELETE", f"/jobs/{job['id']}")


@pytest.fixture(scope="module")
def small_limits(request, appliance):
    """The service restarted with small job limits; skipped where the box cannot enforce them, required where
    it can (--vm, or memory and pids among the controllers of the box's cgroup2 root)."""
    controllers = appliance.cgroup_controllers()
    required = request.config.getoption("--vm") or {"memory", "pids"} <= controllers
    if not required:
        in_force = appliance.containment().get("limits") or {}
        if not {MEMORY_LIMIT, PIDS_LIMIT} <= set(in_force):
            pytest.skip(f"no memory and pids limits here: the box's cgroup2 root has controllers "
                        f"{sorted(controllers) or 'none'}, /health limits {in_force}")
    settings = {LIMIT_VARIABLES[MEMORY_LIMIT]: str(SMALL_MEMORY), LIMIT_VARIABLES[PIDS_LIMIT]: str(SMALL_PIDS)}
    with appliance.boot_settings(settings):
        limits = appliance.containment().get("limits") or {}
        assert (limits.get(MEMORY_LIMIT), limits.get(PIDS_LIMIT)) == (SMALL_MEMORY, SMALL_PIDS), (
            f"limits {settings} not in force on a box with controllers {sorted(controllers)}: "
            f"{appliance.containment()}")
        yield limits


def test_job_past_its_memory_limit_is_killed_and_says_so(appliance, small_limits):
    job = appliance.job(ALLOCATE.format(mib=4 * SMALL_MEMORY >> 20), wait=120)
    assert job["status"] != "succeeded" and "allocated" not in job["stdout"], job
    assert job[OOM_KILLED] is True, job
    assert 0 < job[PEAK_MEMORY] <= SMALL_MEMORY, job


def test_job_within_its_memory_limit_is_not_oom_killed(appliance, small_limits):
    job = appliance.job(ALLOCATE.format(mib=8), wait=120)
    assert (job["status"], job["stdout"]) == ("succeeded", "allocated 8\n"), job
    assert job[OOM_KILLED] is False, job
    assert 8 << 20 <= job[PEAK_MEMORY] <= SMALL_MEMORY, job


def test_fork_loop_stops_at_the_pids_limit(appliance, small_limits):
    job = appliance.job(FORK_LOOP.format(attempts=4 * SMALL_PIDS), timeout=10, wait=120)
    assert job["status"] == "timed_out", job
    forked, reason = map(int, job["stdout"].split())
    assert reason == errno.EAGAIN and SMALL_PIDS // 2 <= forked < SMALL_PIDS, job
    assert appliance.health()["status"] == "ok"
    assert json.loads(appliance.job_output("import json; print(json.dumps('still running jobs'))")) == (
        "still running jobs")
