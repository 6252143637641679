"""Containment against real responders: nothing of a job outlives it, limits hold, jobs can't read the service.

On a root service this host gives the cgroup strategies; the same tests run on a service started as nobody,
which has no writable cgroup and so contains jobs as a child subreaper."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from server_responder.jobs.containment import data_dir_tag
from tests.conftest import RunningResponder, responder_env

NOBODY = 65534
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="starting services as root and as nobody needs root")


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


def wait_for_file(path: Path, seconds: float = 15) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.05)
    raise AssertionError(f"{path} was not written within {seconds}s")


def start_responder(tmp_path: Path, strategy: str, name: str = "r", **settings) -> RunningResponder:
    home = tmp_path / f"{strategy}-{name}"
    home.mkdir(exist_ok=True)
    responder = RunningResponder(home / "data", responder_env(home, **settings))
    if strategy == "subreaper":
        # Read access to the test's interpreter under /root, nothing else: no cgroup is writable for nobody.
        os.chown(home, NOBODY, NOBODY)
        responder.command_prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                                    "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
    return responder.start()


@pytest.fixture(params=["cgroup", "subreaper"])
def strategy(request) -> str:
    return request.param


@pytest.fixture
def started(tmp_path: Path, strategy: str):
    responders: list[RunningResponder] = []

    def start(name: str = "r", **settings) -> RunningResponder:
        responder = start_responder(tmp_path, strategy, name, **settings)
        responders.append(responder)
        return responder

    yield start
    for responder in responders:
        responder.stop()


@pytest.fixture
def marks(tmp_path: Path) -> Path:
    """Where jobs (of any user) write the pids the test checks."""
    directory = tmp_path / "marks"
    directory.mkdir()
    directory.chmod(0o1777)
    return directory


def daemon_script(marks: Path, name: str, then: str = "") -> str:
    # A double-forked daemon in a session of its own, writing its own pid.
    pid_file, alive = marks / f"{name}.pid", marks / f"{name}.alive"
    return (f"setsid sh -c 'echo $$ > {pid_file}; sleep 120; echo alive > {alive}' >/dev/null 2>&1 </dev/null &\n"
            f"{then}\n")


def submit(responder: RunningResponder, script: str, **fields) -> dict:
    answer = responder.request("POST", "/jobs", body={"language": "sh", "script": script, **fields})
    assert answer.status == 202, answer.body
    return answer.json()


def test_a_daemon_is_gone_when_its_job_ends(started, marks):
    responder = started()
    job = submit(responder, daemon_script(marks, "ended", "while [ ! -s " + str(marks / "ended.pid") + " ]; do :; done"))
    assert responder.wait_for(job["id"])["status"] == "succeeded"
    assert gone_within(int(wait_for_file(marks / "ended.pid")), 10)


def test_a_daemon_is_gone_when_its_job_times_out(started, marks):
    responder = started(kill_grace_seconds=1)
    job = submit(responder, daemon_script(marks, "timed", "sleep 100"), timeout=2)
    daemon = int(wait_for_file(marks / "timed.pid"))
    assert _alive(daemon)
    assert responder.wait_for(job["id"])["status"] == "timed_out"
    assert gone_within(daemon, 10)


def test_a_daemon_is_gone_when_its_job_is_cancelled(started, marks):
    responder = started(kill_grace_seconds=1)
    job = submit(responder, daemon_script(marks, "cancelled", "sleep 100"))
    daemon = int(wait_for_file(marks / "cancelled.pid"))
    assert _alive(daemon)
    assert responder.request("DELETE", f"/jobs/{job['id']}").status in (200, 202)
    assert responder.wait_for(job["id"])["status"] == "cancelled"
    assert gone_within(daemon, 10)


def test_nothing_of_a_job_survives_a_killed_service_and_its_restart(started, strategy, marks):
    responder = started()
    job = submit(responder, daemon_script(marks, "crash", "sleep 100"))
    daemon = int(wait_for_file(marks / "crash.pid"))
    workspace = responder.data_dir / "work" / job["id"]
    assert workspace.is_dir() and _alive(daemon)
    if strategy == "subreaper":
        # Its record of the job's processes grows as they are seen: wait until it names the daemon.
        record = responder.data_dir / "work" / f"{job['id']}.pids"
        deadline = time.monotonic() + 10
        while str(daemon) not in (record.read_text().split() if record.exists() else ()):
            assert time.monotonic() < deadline, "the daemon was never recorded"
            time.sleep(0.05)
    responder.kill()
    responder.start()
    assert gone_within(daemon, 15)
    deadline = time.monotonic() + 15
    while workspace.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not workspace.exists()
    assert responder.wait_for(job["id"])["status"] == "interrupted"
    assert not (marks / "crash.alive").exists()


def test_jobs_cannot_read_the_service_environment(started, strategy):
    responder = started()
    service_pid = responder.process.pid
    script = (f"cat /proc/$PPID/environ; echo parent=$?; cat /proc/{service_pid}/environ; echo service=$?; "
              "id -u; grep -E '^Cap(Prm|Eff|Amb)' /proc/self/status")
    job = responder.wait_for(submit(responder, script)["id"])
    assert "SERVER_RESPONDER" not in job["output"]
    assert "parent=0" not in job["stdout"] and "service=0" not in job["stdout"]
    lines = job["stdout"].split()
    assert lines[lines.index("service=1") + 1] != "0"
    assert job["stdout"].count("0000000000000000") == 3, job["stdout"]
    health = responder.request("GET", "/health", token=False).json()["containment"]
    if strategy == "subreaper":
        assert health == {"kind": "subreaper", "limits": {}, "job_user": "nobody", "jobs_share_service_user": True}
        assert "jobs run as the service's own user (nobody)" in "".join(responder.output)
    else:
        assert health["kind"].startswith("cgroup2")
        assert health["job_user"] == "nobody" and health["jobs_share_service_user"] is False


def cgroup_limits(tmp_path: Path, **settings) -> RunningResponder:
    responder = start_responder(tmp_path, "cgroup", **settings)
    limits = responder.request("GET", "/health", token=False).json()["containment"]["limits"]
    if set(settings) - {"job_" + key for key in limits}:
        responder.stop()
        pytest.skip(f"this machine's cgroups give only {sorted(limits)}")
    return responder


def test_a_job_past_job_memory_max_is_killed_and_says_so(tmp_path):
    responder = cgroup_limits(tmp_path, job_memory_max=64 * 1024 * 1024)
    try:
        job = responder.submit("b = bytearray(400 * 1024 * 1024)", language="python")
        job = responder.wait_for(job["id"])
        assert job["status"] == "failed" and job["signal"] == "SIGKILL"
        assert job["oom_killed"] is True
        assert 0 < job["peak_memory_bytes"] <= 64 * 1024 * 1024
        small = responder.wait_for(responder.submit("b = bytearray(8 * 1024 * 1024)", language="python")["id"])
        assert small["status"] == "succeeded" and small["oom_killed"] is False
        assert small["peak_memory_bytes"] >= 8 * 1024 * 1024
        document = responder.request("GET", f"/results/{job['results_location']}").json()
        assert document["oom_killed"] is True and document["peak_memory_bytes"] == job["peak_memory_bytes"]
    finally:
        responder.stop()


def test_a_fork_loop_stops_at_job_pids_max(tmp_path):
    responder = cgroup_limits(tmp_path, job_pids_max=16)
    try:
        script = "i=0; while [ $i -lt 100 ]; do sleep 60 & i=$((i+1)); done; echo spawned; wait"
        job = responder.wait_for(submit(responder, script, timeout=5)["id"], timeout=30)
        assert job["status"] in ("failed", "timed_out")
        assert "Cannot fork" in job["stderr"]
    finally:
        responder.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="jobs run as another user only when the service is root")
def test_a_private_data_dir_moves_workspaces_where_the_job_user_can_reach_them(tmp_path):
    # The quickstart as root: the data dir is under /root (0700), which nobody cannot pass.
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    responder = RunningResponder(private / "data", responder_env(private))
    responder.start()
    try:
        job = responder.submit('id -u; echo kept > "$TMPDIR/f" && cat "$TMPDIR/f"; ls "$HOME" > /dev/null && pwd',
                               language="sh")
        assert job["status"] == "succeeded", job["stderr"]
        uid, kept, workspace = job["stdout"].split()
        assert uid != "0" and kept == "kept"
        assert Path(workspace).parent == Path("/var/tmp/server-responder") / data_dir_tag(private / "data")
        # Removed once the answer is out.
        deadline = time.monotonic() + 10
        while Path(workspace).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not Path(workspace).exists()
    finally:
        responder.stop()
    assert not (Path("/var/tmp/server-responder") / data_dir_tag(private / "data")).exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="jobs run as another user only when the service is root")
def test_a_work_dir_the_job_user_cannot_reach_is_refused_at_start(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    responder = RunningResponder(private / "data", responder_env(private, work_dir=str(private / "work")))
    with pytest.raises(RuntimeError) as refused:
        responder.start(timeout=10)
    output = str(refused.value)
    assert "listening on" not in output
    assert f"work_dir: {private / 'work'} cannot be reached by the job user" in output
    assert f"({private} is closed to it)" in output


def test_a_job_whose_launcher_is_killed_fails_saying_so_and_later_jobs_run(tmp_path, marks):
    responder = start_responder(tmp_path, "cgroup", kill_grace_seconds=1)
    try:
        job = submit(responder, daemon_script(marks, "launched", "sleep 100"))
        daemon = int(wait_for_file(marks / "launched.pid"))
        launcher = responder.launcher_pid()
        os.kill(launcher, 9)
        finished = responder.wait_for(job["id"])
        assert finished["status"] == "failed" and finished["error"] == "the job's launcher ended", finished
        assert gone_within(daemon, 10)
        after = responder.wait_for(submit(responder, "echo after")["id"])
        assert after["status"] == "succeeded" and after["stdout"] == "after\n"
        assert responder.launcher_pid() != launcher
    finally:
        responder.stop()


def test_a_later_job_gets_a_workspace_with_nothing_of_an_earlier_ones(tmp_path):
    # One worker: the workspace the first job leaves, when it is kept, is the one the second job gets.
    responder = start_responder(tmp_path, "cgroup", workers=1)
    work = responder.data_dir / "work"
    listing = 'cd "$HOME" && find . -mindepth 1 | sort | tr "\\n" " "'

    def run_then_kept(script: str) -> tuple[list[str], list[str]]:
        job = responder.submit(script, language="sh")
        assert job["status"] == "succeeded", job["stderr"]
        deadline = time.monotonic() + 10
        while (work / job["id"]).exists():
            assert time.monotonic() < deadline, "the workspace was never finished with"
            time.sleep(0.02)
        return job["stdout"].split(), sorted(entry.name.split("-")[0] for entry in work.iterdir())

    try:
        first = run_then_kept(f'echo secret > "$HOME/left"; echo x > "$TMPDIR/x"; rm "$TMPDIR/x"; {listing}')
        second = run_then_kept(f'{listing}; echo secret > "$TMPDIR/left"')
        third = run_then_kept(listing)
    finally:
        responder.stop()
    # Kept: the first job's files at its top go, and its emptied directories serve the next job.
    assert first == (["./artifacts", "./left", "./script.sh", "./tmp"], ["kept"])
    assert second[0] == ["./artifacts", "./script.sh", "./tmp"]
    # Not kept: a file left below the top, so the workspace went whole and the next job got a new one.
    assert second[1] == []
    assert third == (["./artifacts", "./script.sh", "./tmp"], ["kept"])
    assert list(work.iterdir()) == []
