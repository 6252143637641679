"""The `server-responder` command: serve, config, sign, submit, reap, wake, cat, prune, presign."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from server_responder import __version__
from server_responder.cli import fleet, jobs, reap, results, serve
from server_responder.cli.common import Command, silence_stdout
from server_responder.settings import SettingsError

COMMANDS: tuple[Command, ...] = (*serve.COMMANDS, *jobs.COMMANDS, *reap.COMMANDS, *fleet.COMMANDS,
                                *results.COMMANDS)
DESCRIPTION = "Server Responder: runs jobs asked for over HTTP. Each command has its own --help."
# What a shell reports for a process that wrote to a pipe nobody reads any more (128 + SIGPIPE).
BROKEN_PIPE_STATUS = 141


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """Every command, with the options of `chosen` only when it names one (the others' options import what
    they need: `serve` need not load the reaper's)."""
    parser = argparse.ArgumentParser(prog="server-responder", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subcommands = parser.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    known = chosen in {command.name for command in COMMANDS}
    for command in COMMANDS:
        subparser = subcommands.add_parser(command.name, help=command.help, description=command.help)
        if not known or command.name == chosen:
            command.configure(subparser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(next((word for word in argv if not word.startswith("-")), None)).parse_args(argv)
    function = next(command.run for command in COMMANDS if command.name == args.subcommand)
    try:
        status = function(args)
        sys.stdout.flush()  # here, not at exit, so a reader that has gone is noticed below
        return status
    except BrokenPipeError:
        # The reader has gone (`... | head`): nothing more to say.
        silence_stdout()
        return BROKEN_PIPE_STATUS
    except SettingsError as error:
        print(f"server-responder: invalid settings: {error}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as error:
        print(f"server-responder {args.subcommand}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
