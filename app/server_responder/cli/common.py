"""What every command shares: settings from the environment and an optional file, a finished job's output."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from server_responder.settings import Settings


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def load_settings(args: argparse.Namespace, **overrides: object) -> Settings:
    config = getattr(args, "config", None)
    return Settings.from_env(os.environ, Path(config) if config else None, overrides)


def config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE",
                        help="TOML settings file (default /etc/server-responder/config.toml when present)")


def print_job_output(job: Mapping[str, object], command: str = "submit") -> int:
    """A finished job (its resource or its result document) as ours: its streams, and its exit status."""
    sys.stdout.write(str(job.get("stdout") or ""))
    sys.stderr.write(str(job.get("stderr") or ""))
    return job_exit_status(job, command)


def job_exit_status(job: Mapping[str, object], command: str = "submit") -> int:
    """The exit status a finished job gives our command; a job that did not succeed says how on stderr."""
    if job.get("status") != "succeeded":
        print(f"server-responder {command}: {job_outcome(job)}", file=sys.stderr)
    exit_status = job.get("exit_status")
    return exit_status if isinstance(exit_status, int) and not isinstance(exit_status, bool) else 1


def job_outcome(job: Mapping[str, object]) -> str:
    """A job that did not succeed, in one line: `job <id> timed out (signal SIGKILL)`."""
    status = str(job.get("status", "unknown")).replace("_", " ")
    how = [f"exit status {job['exit_status']}"] if job.get("exit_status") is not None else []
    if job.get("signal"):
        how.append(f"signal {job['signal']}")
    text = f"job {job.get('id') or job.get('job_id')} {status}" + (f" ({', '.join(how)})" if how else "")
    return text + (f": {job['error']}" if job.get("error") else "")


class Listing:
    """Lines on stdout for a command whose work goes on without a reader (`prune ... | head` still prunes):
    once the reader has gone, the lines stop, quietly."""

    def __init__(self) -> None:
        self.reader_gone = False

    def line(self, text: str) -> None:
        if self.reader_gone:
            return
        try:
            print(text)
        except BrokenPipeError:
            self.reader_gone = True
            silence_stdout()


def silence_stdout() -> None:
    """After the reader of stdout has gone: what is still buffered, flushed at exit, goes nowhere instead of
    failing again."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
