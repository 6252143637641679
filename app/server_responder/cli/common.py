"""What every command shares: settings from the environment and an optional file."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
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
