"""The fleet from the caller's side: `wake` stopped boxes, `submit --queue` and `submit --wake-instance-id`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from server_responder.cli.common import Command, load_settings, print_job_output

DEFAULT_READY_TIMEOUT = 300.0
# Exit status of `submit --queue --wait` when no result came in time: timeout(1)'s.
NO_RESULT_IN_TIME = 124


def _ready_timeout_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--ready-timeout", type=float, default=DEFAULT_READY_TIMEOUT, metavar="SECONDS",
                        help="how long to wait for a started instance to run and answer /health "
                             f"(default {DEFAULT_READY_TIMEOUT:g})")


def add_submit_options(parser: argparse.ArgumentParser) -> None:
    from server_responder.reaper.program import add_reach_arguments

    group = parser.add_argument_group("fleet", "send the job to the fleet's SQS queue, or wake a stopped box first")
    where = group.add_mutually_exclusive_group()
    where.add_argument("--queue", metavar="URL",
                       help="send the job as a message to this SQS queue and print its id and results location")
    where.add_argument("--wake-instance-id", metavar="ID",
                       help="start this EC2 instance, wait until its responder answers, then submit to it")
    group.add_argument("--wait", type=float, metavar="SECONDS",
                       help="with --queue: wait this long for the result document in the store, then print the "
                            f"output and exit with the job's status ({NO_RESULT_IN_TIME} if none came)")
    group.add_argument("--store", metavar="URL",
                       help="with --queue: the fleet's results store, s3://bucket/prefix (default: the store "
                            "setting)")
    _ready_timeout_option(group)
    add_reach_arguments(group, insecure=False)


def queued(args: argparse.Namespace) -> bool:
    """Whether submit's options ask for the queue."""
    return args.queue is not None or args.wait is not None or args.store is not None


def submit_to_queue(args: argparse.Namespace, request: dict[str, Any]) -> int:
    """Send the job as a message; with --wait, wait for its result and exit as a plain submit would."""
    from server_responder.fleet.submission import QueueRefused, send_job, wait_for_result
    from server_responder.results.location import open_store

    if args.queue is None:
        print("server-responder submit: --wait and --store go with --queue (a submit to a responder always "
              "waits)", file=sys.stderr)
        return 2
    if args.wait is not None and args.wait <= 0:
        print("server-responder submit: --wait: must be positive", file=sys.stderr)
        return 2
    settings = load_settings(args)
    store_location = args.store or settings.store
    try:
        job = send_job(_aws_client("sqs", args.region), args.queue, request, store_location)
    except QueueRefused as error:
        print(f"server-responder submit: the queue did not take the job: {error}", file=sys.stderr)
        return 1
    print(json.dumps(job.document()), flush=True)
    if args.wait is None:
        return 0
    awaited = wait_for_result(open_store(store_location, settings), job, args.wait)
    if awaited.final or awaited.document is not None:
        return print_job_output(awaited.document)
    why = f" (the store: {awaited.problem})" if awaited.problem else ""
    print(f"server-responder submit: no result for job {job.job_id} at {job.results_location} in "
          f"{store_location} after {args.wait:g} s{why}", file=sys.stderr)
    return NO_RESULT_IN_TIME


def wake_for_submit(args: argparse.Namespace) -> str | None:
    """The URL of the woken box's responder, or None once the reason it did not wake is printed."""
    from server_responder.fleet.wake import WakeError
    from server_responder.reaper.program import UsageError

    try:
        waker = _waker(args, timeout=10.0, insecure=args.insecure)
        waking = next(waker.wake([args.wake_instance_id], args.ready_timeout))
    except (UsageError, WakeError) as error:
        print(f"server-responder submit: {error}", file=sys.stderr)
        return None
    if not waking.ready:
        print(f"server-responder submit: {waking.id} did not wake: {waking.problem}", file=sys.stderr)
        return None
    print(f"server-responder submit: {waking.id} ready at {waking.url} after {waking.seconds:.1f} s",
          file=sys.stderr)
    return waking.url


def _wake_options(parser: argparse.ArgumentParser) -> None:
    from server_responder.reaper.program import add_reach_arguments

    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--instance-id", action="append", metavar="ID",
                       help="an instance to wake; repeatable")
    which.add_argument("--tag-key", metavar="KEY", help="wake every instance with this tag")
    parser.add_argument("--tag-value", help="with --tag-key: only instances whose tag has this value")
    _ready_timeout_option(parser)
    parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                        help="seconds to wait for each /health answer (default 10)")
    add_reach_arguments(parser)


def wake(args: argparse.Namespace) -> int:
    """Exit status: 0 every instance ready, 1 one was not (or AWS failed), 2 a bad option."""
    from server_responder.fleet.wake import WakeError, tagged_instances
    from server_responder.reaper.program import UsageError

    try:
        if args.tag_value is not None and args.tag_key is None:
            raise UsageError("--tag-value goes with --tag-key")
        if args.tag_key == "" or "" in (args.instance_id or ()):
            raise UsageError("--tag-key and --instance-id must not be empty")
        if args.timeout <= 0:
            raise UsageError("--timeout: must be positive")
        waker = _waker(args, timeout=args.timeout, insecure=args.insecure)
    except UsageError as error:
        print(f"server-responder wake: {error}", file=sys.stderr)
        return 2
    not_ready = 0
    try:
        instance_ids = args.instance_id or tagged_instances(waker.ec2, args.tag_key, args.tag_value)
        for waking in waker.wake(instance_ids, args.ready_timeout):
            print(waking.line(), flush=True)
            if not waking.ready:
                not_ready += 1
                print(f"server-responder wake: {waking.id} did not wake: {waking.problem}", file=sys.stderr)
    except WakeError as error:
        print(f"server-responder wake: {error}", file=sys.stderr)
        return 1
    return 1 if not_ready else 0


def _waker(args: argparse.Namespace, timeout: float, insecure: bool) -> Any:
    from server_responder.fleet.wake import Waker
    from server_responder.reaper.program import ResponderClient, UsageError, parse_overrides, responder_port

    if args.ready_timeout <= 0:
        raise UsageError("--ready-timeout: must be positive")
    client = ResponderClient(args.scheme, responder_port(args), insecure, timeout, None,
                             parse_overrides(args.address_override))
    return Waker(_aws_client("ec2", args.region), client, args.private_address)


def _aws_client(service: str, region: str | None) -> Any:
    """A client whose credentials, region and endpoint come from boto3's chain (AWS_ENDPOINT_URL among them)."""
    import boto3

    return boto3.session.Session(region_name=region).client(service)


COMMANDS = (
    Command("wake", "start stopped EC2 instances and wait until their responders answer /health", _wake_options,
            wake),
)
