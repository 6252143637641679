"""What every command shares: settings from the environment and an optional file."""

from __future__ import annotations

import argparse
import os
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
