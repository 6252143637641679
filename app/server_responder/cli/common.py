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
    """The exit status a finished job gives our command, its error said on stderr."""
    if job.get("error"):
        print(f"server-responder {command}: job {job.get('status')}: {job['error']}", file=sys.stderr)
    exit_status = job.get("exit_status")
    return exit_status if isinstance(exit_status, int) and not isinstance(exit_status, bool) else 1
