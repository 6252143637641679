"""Runs one job's process: its own session, a scrubbed environment, a wall clock, capped output."""

from __future__ import annotations

import os
import pwd
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
# How long output may still arrive after the job's own process has exited.
_LATE_OUTPUT_SECONDS = 1.0
_POLL_SECONDS = 0.05


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
) -> ProcessOutcome:
    """Run argv to completion, the timeout or cancellation; never raises for the job's own failures."""
    command = run_as.wrap(argv) if run_as else list(argv)
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        close_fds=True,
        umask=0o007 if run_as else -1,
    )
    if on_started:
        on_started(process.pid)
    capture = _Capture(output_limit)
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ, "stdout")
    selector.register(process.stderr, selectors.EVENT_READ, "stderr")
    deadline = started + timeout
    timed_out = cancelled = False
    kill_at: float | None = None
    exited_at: float | None = None
    try:
        while selector.get_map():
            for key, _ in selector.select(_POLL_SECONDS):
                chunk = os.read(key.fd, 65536)
                if chunk:
                    capture.add(key.data, chunk)
                else:
                    selector.unregister(key.fileobj)
            now = time.monotonic()
            if exited_at is None and process.poll() is not None:
                exited_at = now
                # Whatever the job left behind in its group goes with it.
                _signal_group(process.pid, signal.SIGKILL)
            if exited_at is not None:
                if now - exited_at > _LATE_OUTPUT_SECONDS:
                    break
                continue
            if kill_at is None and (now >= deadline or (cancel is not None and cancel.is_set())):
                timed_out = now >= deadline
                cancelled = not timed_out
                _signal_group(process.pid, signal.SIGTERM)
                kill_at = now + kill_grace
            elif kill_at is not None and now >= kill_at:
                _signal_group(process.pid, signal.SIGKILL)
                kill_at = float("inf")
        process.wait()
    finally:
        selector.close()
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
        _signal_group(process.pid, signal.SIGKILL)
        process.stdout.close()
        process.stderr.close()
    returncode = process.returncode
    return ProcessOutcome(
        exit_status=returncode if returncode >= 0 else None,
        signal=signal.Signals(-returncode).name if returncode < 0 else None,
        stdout=capture.text(capture.streams["stdout"]),
        stderr=capture.text(capture.streams["stderr"]),
        output=capture.text(capture.combined),
        truncated=capture.truncated,
        timed_out=timed_out,
        cancelled=cancelled,
        duration_s=round(time.monotonic() - started, 3),
    )


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass
