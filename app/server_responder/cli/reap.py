"""`reap`: the companion host's timer job."""

from __future__ import annotations

import argparse

from server_responder.cli.common import Command


def _reap_options(parser: argparse.ArgumentParser) -> None:
    from server_responder.reaper.program import add_arguments

    add_arguments(parser)


def reap(args: argparse.Namespace) -> int:
    from server_responder.reaper.program import reap as reap_instances

    return reap_instances(args)


COMMANDS = (
    Command("reap", "stop tagged EC2 instances whose responder is idle (the companion host's timer job)",
            _reap_options, reap),
)
