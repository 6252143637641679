"""Runs one job's process: its own session and cgroup, a scrubbed environment, a wall clock, capped output."""

from __future__ import annotations

import os
import pwd
import select
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from server_responder.jobs.containment import JobCell, ProcessTreeCell, child_setup, data_dir_tag
from server_responder.jobs.launcher import LauncherEnded

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
# The appliance's job user; a root service with no job_user runs jobs as it when it exists, else as nobody.
APPLIANCE_JOB_USER = "server-responder-job"
UNPRIVILEGED_USER = "nobody"
SHARED_WORK_ROOT = Path("/var/tmp/server-responder")
# How long output may still arrive after the job's own process has exited.
_LATE_OUTPUT_SECONDS = 1.0
_POLL_SECONDS = 0.05
_POLL_MILLISECONDS = int(_POLL_SECONDS * 1000)
_EMPTY_POLL_SECONDS = 0.005
# How long processes may take to go once killed before the run stops waiting for them.
_SETTLE_SECONDS = 5.0
_UNREPORTED = "the end of the job's first process was never reported"


@dataclass(frozen=True)
class JobUser:
    name: str
    uid: int
    gid: int

    @classmethod
    def named(cls, name: str) -> JobUser:
        entry = pwd.getpwnam(name)
        return cls(name, entry.pw_uid, entry.pw_gid)

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """Run argv as this user with no supplementary groups and no capabilities left to inherit."""
        return [
            "setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups",
            "--inh-caps=-all", "--ambient-caps=-all", "--no-new-privs", "--", *argv,
        ]


def job_user_for(configured: str, service_uid: int) -> JobUser | None:
    """Who jobs run as: `job_user`, else never root, else (None) the service's own user."""
    if configured:
        return JobUser.named(configured)
    if service_uid != 0:
        return None
    for name in (APPLIANCE_JOB_USER, UNPRIVILEGED_USER):
        try:
            return JobUser.named(name)
        except KeyError:
            continue
    raise RuntimeError(f"the service runs as root and neither {APPLIANCE_JOB_USER} nor {UNPRIVILEGED_USER} exists "
                       "to run jobs as: set job_user")


def blocking_directory(path: Path, user: JobUser) -> Path | None:
    """The first directory on the way to `path` that `user` (with no supplementary groups) cannot pass."""
    for directory in reversed((path, *path.parents)):
        try:
            info = directory.stat()
        except FileNotFoundError:
            return None  # made later by the service, with modes the job user can pass
        if info.st_uid == user.uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid == user.gid:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            return directory
    return None


def shared_work_dir(data_dir: Path) -> Path:
    """Where a root service keeps workspaces when its data dir is private (under /root, say): the job user's
    HOME and TMPDIR are inside them."""
    return SHARED_WORK_ROOT / data_dir_tag(data_dir)


def ensure_shared_work_root() -> None:
    """/var/tmp/server-responder, made by root for root: never a directory or link someone else put there."""
    try:
        SHARED_WORK_ROOT.mkdir(mode=0o711)
    except FileExistsError:
        pass
    info = SHARED_WORK_ROOT.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o022:
        raise RuntimeError(f"{SHARED_WORK_ROOT} is not a directory only root can write; remove it or set work_dir")


@dataclass(frozen=True)
class ProcessOutcome:
    exit_status: int | None
    signal: str | None
    stdout: str
    stderr: str
    output: str
    truncated: bool
    timed_out: bool
    cancelled: bool
    duration_s: float
    error: str | None = None  # the run's end is not the job's own: its launcher ended, say


def job_environment(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The whole environment a job sees: nothing of the service's own."""
    environment = {
        "PATH": SAFE_PATH,
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TMPDIR": str(home / "tmp"),
    }
    environment.update(extra or {})
    return environment


class _Capture:
    """Keeps stdout, stderr and their interleaving, each up to a limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.streams = {"stdout": bytearray(), "stderr": bytearray()}
        self.combined = bytearray()
        self.truncated = False

    def add(self, name: str, chunk: bytes) -> None:
        for buffer in (self.streams[name], self.combined):
            room = self.limit - len(buffer)
            if room < len(chunk):
                self.truncated = True
            if room > 0:
                buffer.extend(chunk[:room])

    def text(self, buffer: bytearray) -> str:
        return buffer.decode("utf-8", errors="replace")


class JobProcess(Protocol):
    """A job's first process, however it was started: the service's Popen or the job's launcher."""

    pid: int
    returncode: int | None  # as Popen's: negative for a signal; None while running, or when its end is unknown
    error: str | None  # why its end is unknown

    @property
    def status_fd(self) -> int | None:
        """A descriptor that becomes readable when the end may be known; None to be polled."""

    def poll(self) -> bool:
        """Whether it has ended, or its end can no longer be known."""

    def wait(self, timeout: float | None = None) -> bool: ...

    def abandon(self, reason: str) -> None:
        """Stop waiting for an end that will not be reported."""

    def close(self) -> None: ...


class _PopenProcess:
    """A process the service forked itself (the subreaper strategy): Popen, with the job's setup before exec."""

    status_fd = None

    def __init__(self, popen: subprocess.Popen) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.error: str | None = None

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    def poll(self) -> bool:
        return self._popen.poll() is not None or self.error is not None

    def wait(self, timeout: float | None = None) -> bool:
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return self.error is not None
        return True

    def abandon(self, reason: str) -> None:
        self.error = reason

    def close(self) -> None:
        pass


def _start(argv: Sequence[str], cwd: Path, env: Mapping[str, str], run_as: JobUser | None, cell: JobCell,
           stdout: int, stderr: int) -> JobProcess:
    placement = cell.placement()
    try:
        if cell.launcher is not None:
            return cell.launcher.spawn(argv, cwd=cwd, env=env, umask=0o007 if run_as else None,
                                       uid=run_as.uid if run_as else None, gid=run_as.gid if run_as else None,
                                       stdout=stdout, stderr=stderr, placement=placement)
        return _PopenProcess(subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            close_fds=True,
            umask=0o007 if run_as else -1,
            user=run_as.uid if run_as else None,
            group=run_as.gid if run_as else None,
            extra_groups=[] if run_as else None,
            preexec_fn=child_setup(placement),
        ))
    finally:
        for descriptor in placement:
            os.close(descriptor)


def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,
    output_limit: int,
    kill_grace: float = 5.0,
    run_as: JobUser | None = None,
    cancel: threading.Event | None = None,
    on_started: Callable[[int], None] | None = None,
    cell: JobCell | None = None,
    on_output: Callable[[str, bytes], None] | None = None,
) -> ProcessOutcome:
    """Run argv to completion, the timeout or cancellation; never raises for the job's own failures.

    Every process of the run lives in `cell` (the job's cgroup, or its process tree where there is none): when the
    run ends, all of them are sent SIGTERM, and whatever is left after `kill_grace` is killed."""
    cell = cell if cell is not None else ProcessTreeCell()
    started = time.monotonic()
    stdout_read, stdout_write = os.pipe()
    stderr_read, stderr_write = os.pipe()
    try:
        process = _start(argv, cwd, env, run_as, cell, stdout_write, stderr_write)
    except LauncherEnded as error:
        for descriptor in (stdout_read, stderr_read):
            os.close(descriptor)
        if not cell.empty():
            cell.kill_all()  # it may have started the process before it ended
        return ProcessOutcome(None, None, "", "", "", False, False, False,
                              round(time.monotonic() - started, 3), error=str(error))
    except BaseException:
        for descriptor in (stdout_read, stderr_read):
            os.close(descriptor)
        raise
    finally:
        for descriptor in (stdout_write, stderr_write):
            os.close(descriptor)
    cell.started(process.pid)
    if on_started:
        on_started(process.pid)
    capture = _Capture(output_limit)
    # One poll set per run, no selector objects: a trivial job is over in a few rounds.
    streams = {stdout_read: "stdout", stderr_read: "stderr"}
    poller = select.poll()
    for descriptor in streams:
        poller.register(descriptor, select.POLLIN)
    status_fd = process.status_fd
    if status_fd is not None:
        poller.register(status_fd, select.POLLIN)
    watched = len(streams) + (status_fd is not None)
    deadline = started + timeout
    timed_out = cancelled = False
    kill_at: float | None = None
    exited_at: float | None = None
    emptied_at: float | None = None
    killed_at: float | None = None
    try:
        while True:
            if watched:
                for descriptor, _ in poller.poll(_POLL_MILLISECONDS):
                    if descriptor == status_fd:
                        poller.unregister(descriptor)
                        watched -= 1
                        status_fd = None  # said what it had to: the exit status, or the launcher's end
                        continue
                    chunk = os.read(descriptor, 65536)
                    if chunk:
                        capture.add(streams[descriptor], chunk)
                        if on_output is not None:
                            on_output(streams[descriptor], chunk)
                    else:
                        poller.unregister(descriptor)
                        watched -= 1
            elif exited_at is not None:
                time.sleep(_EMPTY_POLL_SECONDS)  # until what the job left behind has gone
            else:
                process.wait(_POLL_SECONDS)
            now = time.monotonic()
            cell.watch()
            # While its status descriptor is unread, the launcher has nothing to report.
            if exited_at is None and status_fd is None and process.poll():
                exited_at = now
            if kill_at is None and emptied_at is None:
                ended = exited_at is not None
                timed_out = not ended and now >= deadline
                cancelled = not ended and not timed_out and cancel is not None and cancel.is_set()
                if ended or timed_out or cancelled:
                    # Whatever the job left behind goes with it; a job that left nothing is not waited for.
                    if ended and cell.empty():
                        emptied_at = now
                    else:
                        cell.signal_all(signal.SIGTERM)
                        kill_at = now + kill_grace
            if kill_at is not None and emptied_at is None:
                if cell.empty():
                    emptied_at = now
                elif killed_at is None and now >= kill_at:
                    cell.kill_all()
                    killed_at = now
                elif killed_at is not None and now - killed_at > _SETTLE_SECONDS:
                    break  # processes not gone even when killed (stuck in the kernel): left for the job's end
            if emptied_at is not None and exited_at is None and now - emptied_at > _SETTLE_SECONDS:
                process.abandon(_UNREPORTED)  # all gone, yet the first one's end never reported
                if status_fd is not None:
                    poller.unregister(status_fd)
                    watched -= 1
                    status_fd = None
            if exited_at is not None and emptied_at is not None:
                # Output still buffered in the pipes is read; nothing can write to them any more.
                if not watched or now - emptied_at > _LATE_OUTPUT_SECONDS:
                    break
        _wait_or_abandon(process)
    finally:
        if not process.poll():
            cell.kill_all()
            _wait_or_abandon(process)
        if not cell.empty():
            cell.kill_all()
        process.close()
        for descriptor in (stdout_read, stderr_read):
            os.close(descriptor)
    returncode = process.returncode
    return ProcessOutcome(
        exit_status=returncode if returncode is not None and returncode >= 0 else None,
        signal=signal.Signals(-returncode).name if returncode is not None and returncode < 0 else None,
        stdout=capture.text(capture.streams["stdout"]),
        stderr=capture.text(capture.streams["stderr"]),
        output=capture.text(capture.combined),
        truncated=capture.truncated,
        timed_out=timed_out,
        cancelled=cancelled,
        duration_s=round(time.monotonic() - started, 3),
        error=process.error,
    )


def _wait_or_abandon(process: JobProcess) -> None:
    if not process.wait(_SETTLE_SECONDS):
        process.abandon(_UNREPORTED)
