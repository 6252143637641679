"""The job launcher with real cgroups and real processes: who a job is, where it runs, what it inherits, and what
happens when the launcher itself is gone."""

import errno
import math
import os
import signal
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from server_responder.jobs.containment import HostView, kill_only_cgroups
from server_responder.jobs.launcher import (CLONED, LAUNCHER_ENDED, QUIET_SECONDS, SPAWNED, Launcher, PendingTidy,
                                           TidyStep)
from server_responder.jobs.runner import JobUser, run_process

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="job cgroups and a job user need root")

NO_CAPABILITIES = "0000000000000000"


# How a job's first process gets into its cgroups: cloned into them (the first job after a quiet spell), or
# spawned by the launcher from within them (during a run of jobs). Every test runs with each.
PLACINGS = {"cloned": 0.0, "spawned from within": math.inf}


@pytest.fixture(params=PLACINGS)
def strategy(tmp_path: Path, request):
    settings = SimpleNamespace(data_dir=tmp_path / "data", job_memory_max=64 * 1024 * 1024, job_pids_max=64,
                               job_cpu_weight=100)
    found = kill_only_cgroups(settings, HostView())
    if found is None:
        pytest.skip("no writable cgroup2 hierarchy here")
    found.launcher = Launcher(found.launcher.homes, quiet_seconds=PLACINGS[request.param])
    found.start()
    yield found
    found.close()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    directory = tmp_path / "work"
    directory.mkdir()
    directory.chmod(0o777)
    return directory


def run(strategy, workspace: Path, argv, job_id: str = "job", env=None, **options):
    options = {"timeout": 10, "output_limit": 1 << 20, "kill_grace": 1, **options}
    cell = strategy.job(job_id)
    try:
        outcome = run_process(argv, cwd=workspace, env=env if env is not None else {"PATH": "/usr/bin:/bin"},
                              run_as=options.pop("run_as", JobUser.named("nobody")), cell=cell, **options)
        assert cell.empty()
        return outcome
    finally:
        cell.remove()


def status_fields(text: str) -> dict[str, str]:
    return {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in text.splitlines() if ":" in line}


def own_cgroups(pid: int | str = "self") -> str:
    return Path(f"/proc/{pid}/cgroup").read_text()


def test_a_job_is_the_job_user_with_no_groups_no_capabilities_and_no_new_privileges(strategy, workspace):
    nobody = JobUser.named("nobody")
    outcome = run(strategy, workspace, ["cat", "/proc/self/status"])
    assert outcome.exit_status == 0, outcome.stderr
    fields = status_fields(outcome.stdout)
    assert fields["Uid"].split() == [str(nobody.uid)] * 4
    assert fields["Gid"].split() == [str(nobody.gid)] * 4
    assert fields["Groups"] == ""
    for capabilities in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert fields[capabilities] == NO_CAPABILITIES, capabilities
    assert fields["NoNewPrivs"] == "1"


def test_a_job_starts_in_its_cgroups_and_the_launcher_goes_back_to_its_own(strategy, workspace):
    # The job's first process reads its own cgroups: it was placed before its exec, by no one after it.
    outcome = run(strategy, workspace, ["cat", "/proc/self/cgroup"], job_id="placed")
    assert outcome.exit_status == 0, outcome.stderr
    joined = {line.split(":", 2)[1]: line.split(":", 2)[2] for line in outcome.stdout.splitlines()}
    tag = strategy.parent.name
    assert joined[""].endswith(f"/{tag}/placed")
    assert joined["memory"].endswith(f"/{tag}/placed") and joined["pids"].endswith(f"/{tag}/placed")
    assert own_cgroups(strategy.launcher.pid) == own_cgroups()


def test_the_launcher_keeps_nothing_a_job_could_inherit(strategy, workspace):
    run(strategy, workspace, ["true"])  # the launcher is up and has served a job
    fields = status_fields(Path(f"/proc/{strategy.launcher.pid}/status").read_text())
    assert fields["Groups"] == "" and fields["NoNewPrivs"] == "1"
    assert fields["CapInh"] == NO_CAPABILITIES and fields["CapAmb"] == NO_CAPABILITIES
    assert fields["Uid"].split() == ["0"] * 4
    environment = Path(f"/proc/{strategy.launcher.pid}/environ").read_bytes().split(b"\0")
    assert not [entry for entry in environment if entry.startswith(b"SERVER_RESPONDER")]


@pytest.mark.parametrize(("script", "exit_status", "signal"), [
    ("exit 0", 0, None), ("exit 7", 7, None), ("kill -TERM $$", None, "SIGTERM"), ("kill -KILL $$", None, "SIGKILL"),
    ("kill -SEGV $$", None, "SIGSEGV"),
])
def test_exit_statuses_and_signals_are_reported(strategy, workspace, script, exit_status, signal):
    outcome = run(strategy, workspace, ["sh", "-c", script])
    assert (outcome.exit_status, outcome.signal, outcome.error) == (exit_status, signal, None)


def test_an_exec_failure_is_the_error_it_was(strategy, workspace):
    with pytest.raises(FileNotFoundError) as missing:
        run(strategy, workspace, ["no-such-program-anywhere"])
    assert missing.value.errno == errno.ENOENT and missing.value.filename == "no-such-program-anywhere"
    script = workspace / "private.sh"
    script.write_text("#!/bin/sh\necho never\n")
    script.chmod(0o700)  # root's alone: the job user may not run it
    with pytest.raises(PermissionError):
        run(strategy, workspace, [str(script)])
    assert run(strategy, workspace, ["sh", "-c", "echo after"]).stdout == "after\n"


def test_the_environment_is_exactly_the_one_given(strategy, workspace, monkeypatch):
    monkeypatch.setenv("SERVER_RESPONDER_API_KEY", "leak")
    outcome = run(strategy, workspace, ["/usr/bin/env"], env={"A": "1", "B": "two words", "C": ""})
    assert outcome.stdout == "A=1\nB=two words\nC=\n"


def test_the_program_is_found_in_the_jobs_own_path(strategy, workspace):
    tools = workspace / "tools"
    tools.mkdir(mode=0o755)
    (tools / "greet").write_text("#!/bin/sh\necho hello from tools\n")
    (tools / "greet").chmod(0o755)
    outcome = run(strategy, workspace, ["greet"], env={"PATH": f"/nonexistent:{tools}:/usr/bin:/bin"})
    assert outcome.stdout == "hello from tools\n"


def test_only_stdin_stdout_and_stderr_are_open_in_a_job(strategy, workspace):
    # Another job running at the same time: its descriptors in the launcher must not reach this one either.
    other = threading.Thread(target=run, args=(strategy, workspace, ["sleep", "2"], "other"))
    other.start()
    try:
        outcome = run(strategy, workspace, ["sh", "-c", "ls /proc/$$/fd; readlink /proc/$$/fd/0"], job_id="fds")
    finally:
        other.join()
    assert outcome.exit_status == 0, outcome.stderr
    *descriptors, stdin = outcome.stdout.split()
    assert descriptors == ["0", "1", "2"] and stdin == "/dev/null"


def test_the_umask_and_cwd_are_the_jobs(strategy, workspace):
    outcome = run(strategy, workspace, ["sh", "-c", "umask; pwd"])
    assert outcome.stdout.split() == ["0007", str(workspace)]


def wait_until(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_a_job_whose_launcher_dies_fails_saying_so_and_the_next_job_runs(strategy, workspace):
    launcher = strategy.launcher
    marker = workspace / "started"
    started: list[int] = []
    outcomes = []
    cell = strategy.job("orphaned")

    def job() -> None:
        outcomes.append(run_process(["sh", "-c", f"touch {marker}; sleep 60"], cwd=workspace, env={"PATH": "/bin"},
                                    timeout=60, output_limit=1024, kill_grace=1, run_as=JobUser.named("nobody"),
                                    cell=cell, on_started=started.append))

    runner = threading.Thread(target=job)
    runner.start()
    wait_until(marker.exists)
    first = launcher.pid
    os.kill(first, 9)
    runner.join(20)
    assert not runner.is_alive()
    outcome, = outcomes
    assert outcome.error == LAUNCHER_ENDED
    assert outcome.exit_status is None and not outcome.timed_out
    assert cell.empty()  # the job's processes went with it
    cell.remove()
    assert launcher.pid not in (None, first)
    assert run(strategy, workspace, ["sh", "-c", "echo next"]).stdout == "next\n"


def test_a_launcher_gone_between_jobs_is_replaced_for_the_next_one(strategy, workspace):
    run(strategy, workspace, ["true"])
    first = strategy.launcher.pid
    os.kill(first, 9)
    wait_until(lambda: Path(f"/proc/{first}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z")
    assert run(strategy, workspace, ["sh", "-c", "echo replaced"]).stdout == "replaced\n"
    assert strategy.launcher.pid != first


def test_a_stopped_launcher_is_gone_and_starts_again_with_the_next_job(strategy, workspace):
    launcher: Launcher = strategy.launcher
    run(strategy, workspace, ["true"])
    first = launcher.pid
    launcher.stop()
    assert launcher.pid is None and not Path(f"/proc/{first}").exists()
    assert run(strategy, workspace, ["sh", "-c", "echo again"]).stdout == "again\n"


def test_the_next_jobs_cgroups_are_made_ahead_with_its_limits_and_take_its_name(strategy, workspace):
    run(strategy, workspace, ["true"])  # its end prepares the next job's cgroups
    strategy.settle()
    for parent in strategy.v1_parents.values():
        assert [child.name for child in parent.iterdir() if child.is_dir()] == ["prepared-1"]
    memory, pids = strategy.v1_parents["memory"] / "next", strategy.v1_parents["pids"] / "next"
    outcome = run(strategy, workspace, ["sh", "-c", f"cat {memory}/memory.limit_in_bytes {pids}/pids.max "
                                                    "/proc/self/cgroup"], job_id="next")
    assert outcome.exit_status == 0, outcome.stderr
    memory_limit, pids_limit, *cgroups = outcome.stdout.splitlines()
    assert (int(memory_limit), int(pids_limit)) == (64 * 1024 * 1024, 64)
    joined = {line.split(":", 2)[1]: line.split(":", 2)[2] for line in cgroups}
    tag = strategy.parent.name
    assert all(joined[name].endswith(f"/{tag}/next") for name in ("", "memory", "pids"))
    strategy.settle()
    for parent in strategy.v1_parents.values():
        assert [child.name for child in parent.iterdir() if child.is_dir()] == ["prepared-2"]


def test_recovery_removes_prepared_cgroups_as_no_jobs_and_the_next_job_makes_its_own(strategy, workspace):
    run(strategy, workspace, ["true"])
    assert strategy.recover() == []
    for parent in (strategy.parent, *strategy.v1_parents.values()):
        assert not [child for child in parent.iterdir() if child.is_dir()]
    outcome = run(strategy, workspace, ["sh", "-c", f"cat {strategy.v1_parents['pids']}/own/pids.max"], job_id="own")
    assert outcome.stdout == "64\n"


def job_directories(strategy, name: str) -> list[Path]:
    """The cgroup directories named `name` below the strategy's parents that exist."""
    return [parent / name for parent in (strategy.parent, *strategy.v1_parents.values()) if (parent / name).is_dir()]


def ended_cell(strategy, workspace: Path, job_id: str):
    """A cell whose job has run and ended, not yet removed."""
    cell = strategy.job(job_id)
    outcome = run_process(["true"], cwd=workspace, env={"PATH": "/usr/bin:/bin"}, timeout=10, output_limit=1024,
                          run_as=JobUser.named("nobody"), cell=cell)
    assert outcome.exit_status == 0 and cell.empty()
    return cell


def test_a_finished_jobs_cgroups_are_removed_and_the_next_ones_made_by_the_launcher(strategy, workspace):
    cell = ended_cell(strategy, workspace, "tidied")
    launcher = strategy.launcher.pid
    os.kill(launcher, signal.SIGSTOP)
    try:
        cell.remove()  # does not wait for the launcher
        assert len(job_directories(strategy, "tidied")) == 3
    finally:
        os.kill(launcher, signal.SIGCONT)
    strategy.settle()
    assert job_directories(strategy, "tidied") == []
    prepared = [child.name for parent in strategy.v1_parents.values() for child in parent.iterdir() if child.is_dir()]
    assert prepared == ["prepared-1", "prepared-1"]
    assert strategy.launcher.pid == launcher


def test_cgroups_a_lost_launcher_did_not_remove_are_removed_by_the_service(strategy, workspace):
    cell = ended_cell(strategy, workspace, "orphaned")
    launcher = strategy.launcher.pid
    os.kill(launcher, signal.SIGSTOP)
    cell.remove()
    os.kill(launcher, signal.SIGKILL)  # with the request unread
    strategy.settle()
    assert job_directories(strategy, "orphaned") == []
    # The directories it was to prepare are not used; the next job makes its own, and runs.
    assert run(strategy, workspace, ["sh", "-c", "echo next"], job_id="next").stdout == "next\n"


def test_a_job_run_again_under_its_id_gets_new_cgroups_once_the_last_runs_are_gone(strategy, workspace):
    cell = ended_cell(strategy, workspace, "again")
    launcher = strategy.launcher.pid
    os.kill(launcher, signal.SIGSTOP)
    cell.remove()
    os.kill(launcher, signal.SIGKILL)
    again = strategy.job("again")
    strategy.settle()  # nothing of the last run's removal is left to undo the new run's directories
    try:
        assert len(job_directories(strategy, "again")) == 3
        outcome = run_process(["sh", "-c", "cat /proc/self/cgroup"], cwd=workspace, env={"PATH": "/usr/bin:/bin"},
                              timeout=10, output_limit=4096, run_as=JobUser.named("nobody"), cell=again)
        assert outcome.exit_status == 0, outcome.stderr
        assert all(line.endswith("/again") for line in outcome.stdout.splitlines()
                   if line.split(":", 2)[1] in ("", "memory", "pids"))
    finally:
        again.remove()


@pytest.mark.parametrize("name", ["../{outside}", "{outside}/..", "..", "."])
def test_a_tidy_step_naming_anything_but_a_child_is_refused_and_the_launcher_serves_on(strategy, workspace, name):
    outside = strategy.parent.parent / f"outside-{os.getpid()}"  # a sibling cgroup of the service's job parent
    outside.mkdir()
    try:
        parent = os.open(strategy.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            pending = strategy.launcher.tidy([TidyStep(remove=name.format(outside=outside.name))], [parent])
        finally:
            os.close(parent)
        assert pending.answered(10)
        assert pending.error is not None and pending.error.startswith(f"{errno.EINVAL} ")
        assert outside.is_dir()
    finally:
        outside.rmdir()
    assert run(strategy, workspace, ["sh", "-c", "echo still"]).stdout == "still\n"


def test_a_tidy_request_closed_before_its_answer_counts_as_answered_by_a_launcher_that_ended():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.close()
    ours.setblocking(False)
    pending = PendingTidy(ours)
    pending.close()
    assert pending.answered(1) and pending.error == LAUNCHER_ENDED


def test_a_job_made_while_the_launcher_prepares_makes_its_own_cgroups(strategy, workspace):
    cell = ended_cell(strategy, workspace, "first")
    launcher = strategy.launcher.pid
    os.kill(launcher, signal.SIGSTOP)
    try:
        cell.remove()  # asks for prepared-1, not made yet
        second = strategy.job("second")
        assert [path.name for path in second.v1.values()] == ["second", "second"]
        assert (strategy.v1_parents["pids"] / "second" / "pids.max").read_text().strip() == "64"
    finally:
        os.kill(launcher, signal.SIGCONT)
    second.remove()
    strategy.settle()
    assert job_directories(strategy, "second") == [] and job_directories(strategy, "first") == []


@pytest.mark.parametrize(("argv", "env"), [(["echo", "a\0b"], {"PATH": "/bin"}), (["true"], {"A": "x\0y"}),
                                           (["true"], {"A\0B": "x"})])
def test_an_argument_or_variable_holding_a_nul_is_refused_and_the_launcher_serves_on(strategy, workspace, argv,
                                                                                        env):
    with pytest.raises(OSError) as refused:
        run(strategy, workspace, argv, env=env)
    assert refused.value.errno == errno.EINVAL
    assert run(strategy, workspace, ["sh", "-c", "echo still"]).stdout == "still\n"


def spawn_true(launcher: Launcher, cell, workspace: Path):
    """`true` started through `launcher` in `cell`, waited for: its LaunchedProcess."""
    nobody = JobUser.named("nobody")
    placement = cell.placement()
    output_read, output_write = os.pipe()
    try:
        process = launcher.spawn(["true"], cwd=workspace, env={"PATH": "/usr/bin:/bin"}, umask=0o007,
                                 uid=nobody.uid, gid=nobody.gid, stdout=output_write, stderr=output_write,
                                 placement=placement)
    finally:
        for descriptor in (*placement, output_write):
            os.close(descriptor)
    try:
        assert process.wait(10) and process.returncode == 0
        return process
    finally:
        process.close()
        os.close(output_read)


def test_a_job_after_a_quiet_spell_is_cloned_into_its_cgroups_and_one_right_after_spawned_from_them(
        strategy, workspace):
    # A quiet spell longer than the service's (QUIET_SECONDS), so that a slow machine still starts the second
    # job within it.
    quiet = max(QUIET_SECONDS, 0.5)
    launcher = Launcher(strategy.launcher.homes, quiet_seconds=quiet)
    cells = [strategy.job(f"paced-{n}") for n in range(3)]
    try:
        first = spawn_true(launcher, cells[0], workspace)
        second = spawn_true(launcher, cells[1], workspace)  # at once
        time.sleep(quiet * 2)  # the pause is what is being tested, not a wait for something to happen
        third = spawn_true(launcher, cells[2], workspace)
        assert (first.placing, second.placing, third.placing) == (CLONED, SPAWNED, CLONED)
    finally:
        launcher.stop()
        for cell in cells:
            cell.remove()
