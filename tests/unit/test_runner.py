import os
import sys
import threading
import time
from pathlib import Path

import pytest

from server_responder.jobs.runner import JobUser, job_environment, run_process


def run(argv, tmp_path: Path, **limits):
    options = {"timeout": 10, "output_limit": 1 << 20, "kill_grace": 1}
    options.update(limits)
    return run_process(argv, cwd=tmp_path, env=job_environment(tmp_path), **options)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie waiting for its parent is dead for our purpose.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def dies_soon(pid: int, within: float = 5) -> bool:
    deadline = time.monotonic() + within
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


def test_timeout_kills_the_whole_group_including_grandchildren(tmp_path: Path):
    pid_file = tmp_path / "grandchild.pid"
    script = f"sleep 300 & echo $! > {pid_file}; echo started; wait"
    outcome = run(["sh", "-c", script], tmp_path, timeout=1)
    assert outcome.timed_out
    assert outcome.exit_status is None and outcome.signal in ("SIGTERM", "SIGKILL")
    assert outcome.stdout == "started\n"
    assert dies_soon(int(pid_file.read_text()))


def test_a_job_ignoring_sigterm_is_killed_after_the_grace_period(tmp_path: Path):
    # An ignored signal stays ignored across exec, so `sleep` ignores SIGTERM too.
    outcome = run(["sh", "-c", "trap '' TERM; echo ready; sleep 60"], tmp_path, timeout=1, kill_grace=0.5)
    assert outcome.timed_out
    assert outcome.signal == "SIGKILL"
    assert outcome.stdout == "ready\n"


def test_background_processes_left_by_a_finished_job_are_killed(tmp_path: Path):
    pid_file = tmp_path / "left.pid"
    outcome = run(["sh", "-c", f"sleep 300 >/dev/null 2>&1 & echo $! > {pid_file}"], tmp_path)
    assert outcome.exit_status == 0
    assert dies_soon(int(pid_file.read_text()))


def test_output_is_capped_per_stream_and_flagged(tmp_path: Path):
    script = "import sys\nsys.stdout.write('o' * 5000)\nsys.stderr.write('e' * 10)"
    outcome = run([sys.executable, "-c", script], tmp_path, output_limit=1000)
    assert outcome.truncated
    assert outcome.stdout == "o" * 1000
    assert len(outcome.output) == 1000
    assert outcome.exit_status == 0


def test_stdout_and_stderr_are_kept_apart_and_combined_in_arrival_order(tmp_path: Path):
    # Pauses between writes make the arrival order well defined across the two pipes.
    script = ("import sys, time\nprint('one', flush=True)\ntime.sleep(0.2)\n"
              "print('two', file=sys.stderr, flush=True)\ntime.sleep(0.2)\nprint('three', flush=True)")
    outcome = run([sys.executable, "-c", script], tmp_path)
    assert outcome.stdout == "one\nthree\n"
    assert outcome.stderr == "two\n"
    assert outcome.output == "one\ntwo\nthree\n"
    assert not outcome.truncated


def test_exit_status_is_reported(tmp_path: Path):
    assert run(["sh", "-c", "exit 7"], tmp_path).exit_status == 7


def test_job_sees_only_the_scrubbed_environment(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "leak")
    monkeypatch.setenv("SERVER_RESPONDER_API_KEY", "leak")
    env = job_environment(tmp_path, {"GREETING": "hi"})
    outcome = run_process(["env"], cwd=tmp_path, env=env, timeout=5, output_limit=65536)
    names = {line.split("=", 1)[0] for line in outcome.stdout.splitlines()}
    assert names <= {"PATH", "HOME", "LANG", "TMPDIR", "GREETING", "PWD", "SHLVL", "_"}
    assert "leak" not in outcome.stdout
    assert "GREETING=hi" in outcome.stdout


def test_cancel_stops_the_job(tmp_path: Path):
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    outcome = run_process(["sleep", "30"], cwd=tmp_path, env=job_environment(tmp_path), timeout=30,
                          output_limit=1024, kill_grace=1, cancel=cancel)
    assert outcome.cancelled and not outcome.timed_out
    assert outcome.signal == "SIGTERM"


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_job_runs_as_the_job_user_without_supplementary_groups_or_capabilities(tmp_path: Path):
    nobody = JobUser.named("nobody")
    tmp_path.chmod(0o777)
    outcome = run_process(["sh", "-c", "id -u; id -G; grep -E '^Cap(Eff|Prm|Amb)' /proc/self/status"],
                          cwd=tmp_path, env=job_environment(tmp_path), timeout=5, output_limit=65536,
                          run_as=nobody)
    assert outcome.exit_status == 0, outcome.stderr
    uid, groups, *caps = outcome.stdout.splitlines()
    assert int(uid) == nobody.uid
    assert groups.split() == [str(nobody.gid)]
    assert caps and all(line.split()[1] == "0000000000000000" for line in caps)
