"""The reaper: the companion host's timer job that stops responder instances on EC2 once they are idle.

It stops an instance only when the instance itself reports being idle long enough with nothing queued or
running, or when it has not answered for a long time — never on a single failed poll, never a busy box.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from server_responder.files import write_atomically
from server_responder.http_client import HttpClient, HttpFailure
from server_responder.lifecycle.idle import iso_utc
from server_responder.lifecycle.idle_watch import UPLOAD_WAIT_FACTOR

STOP = "stop"
KEEP = "keep"
POLL_WORKERS = 16


class ReaperError(Exception):
    """The reaper cannot do its work (AWS unreachable, refused, misconfigured)."""


class UsageError(ValueError):
    """An option is malformed; the message names it."""


@dataclass(frozen=True)
class Instance:
    id: str
    address: str | None


@dataclass(frozen=True)
class Poll:
    """One instance's answer to GET /last_job: the document, or why there is none."""

    document: dict[str, Any] | None = None
    error: str | None = None

    @property
    def answered(self) -> bool:
        return self.document is not None


@dataclass(frozen=True)
class Judgement:
    action: str
    reason: str
    unreachable_since: float | None = None


@dataclass
class Report:
    """One line of output: what happened to one instance."""

    id: str
    address: str | None
    url: str | None
    verdict: str
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return json.dumps({"id": self.id, "address": self.address, "url": self.url, "verdict": self.verdict,
                           "reason": self.reason, **self.details})


def judge(poll: Poll, now: float, idle_threshold: float, unreachable_threshold: float,
          unreachable_since: float | None) -> Judgement:
    """Whether to stop one instance, from its answer (or silence) alone. Pure."""
    if not poll.answered:
        since = unreachable_since if unreachable_since is not None else now
        waited = now - since
        if waited >= unreachable_threshold:
            return Judgement(STOP, f"unreachable for {waited / 60:.1f} min since {iso_utc(since)} "
                                   f"(>= {unreachable_threshold / 60:g} min): {poll.error}", since)
        return Judgement(KEEP, f"unreachable for {waited / 60:.1f} min since {iso_utc(since)}, stopped after "
                               f"{unreachable_threshold / 60:g} min: {poll.error}", since)
    document = poll.document or {}
    running, queued = document["running_jobs"], document["queued_jobs"]
    idle = float(document["idle_seconds"])
    if running or queued:
        return Judgement(KEEP, f"busy: {running} running, {queued} queued")
    if idle < idle_threshold:
        return Judgement(KEEP, f"idle for {idle:.0f} s < {idle_threshold:g} s")
    # As the box's own idle stop: results still uploading get one more threshold; the spool survives a stop.
    pending = document.get("pending_uploads")
    if isinstance(pending, int) and pending > 0 and idle < UPLOAD_WAIT_FACTOR * idle_threshold:
        return Judgement(KEEP, f"idle for {idle:.0f} s, {pending} results still uploading")
    return Judgement(STOP, f"idle for {idle:.0f} s >= {idle_threshold:g} s, nothing queued or running")


def valid_last_job(document: Any) -> bool:
    """Whether an answer is a /last_job document that says how busy the box is."""
    if not isinstance(document, dict):
        return False
    counts_ok = all(isinstance(document.get(k), int) and not isinstance(document.get(k), bool) and document[k] >= 0
                    for k in ("running_jobs", "queued_jobs"))
    idle = document.get("idle_seconds")
    return counts_ok and isinstance(idle, (int, float)) and not isinstance(idle, bool) and idle >= 0


class UnreachableLog:
    """`{"unreachable": {"<instance id>": {"since": "<ISO-8601 UTC>", "address": ..., "error": ...}}}`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problem: str | None = None
        self.entries: dict[str, dict[str, Any]] = self._load()

    def _load(self) -> dict[str, dict[str, Any]]:
        # A damaged file starts the unreachable clocks afresh: that only delays stopping, never hastens it.
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            self.problem = f"--state-file: cannot read {self.path} ({error}); starting afresh"
            return {}
        entries = raw.get("unreachable") if isinstance(raw, dict) else None
        if not isinstance(entries, dict):
            self.problem = f"--state-file: {self.path} is not a reaper state file; starting afresh"
            return {}
        return {key: value for key, value in entries.items() if isinstance(value, dict)}

    def since(self, instance_id: str) -> float | None:
        text = self.entries.get(instance_id, {}).get("since")
        try:
            return datetime.fromisoformat(str(text)).timestamp() if text else None
        except ValueError:
            return None

    def replace(self, unreachable: Mapping[str, dict[str, Any]]) -> None:
        self.entries = dict(unreachable)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, (json.dumps({"unreachable": self.entries}, indent=2, sort_keys=True) + "\n")
                         .encode(), mode=0o600)


def list_running_instances(ec2: Any, tag_key: str, tag_value: str | None, private: bool) -> list[Instance]:
    filters = [{"Name": "instance-state-name", "Values": ["running"]}]
    if tag_value is None:
        filters.append({"Name": "tag-key", "Values": [tag_key]})
    else:
        filters.append({"Name": f"tag:{tag_key}", "Values": [tag_value]})
    instances = []
    for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
        for reservation in page.get("Reservations", []):
            for found in reservation.get("Instances", []):
                instances.append(Instance(found["InstanceId"], instance_address(found, private)))
    return sorted(instances, key=lambda instance: instance.id)


def instance_address(description: Mapping[str, Any], private: bool) -> str | None:
    """The address to reach an instance EC2 describes: its private one, or its public one where it has one."""
    public, internal = description.get("PublicIpAddress"), description.get("PrivateIpAddress")
    return internal if private else (public or internal)


class ResponderClient:
    """HTTP to one responder: GET /last_job, POST and DELETE /drain."""

    def __init__(self, scheme: str, port: int, insecure: bool, timeout: float, token: str | None,
                 overrides: Mapping[str, str]) -> None:
        self.scheme = scheme
        self.port = port
        self.token = token
        self.overrides = dict(overrides)
        self.http = HttpClient(timeout=timeout, verify_certificates=not insecure)

    def base_url(self, instance: Instance) -> str | None:
        if instance.id in self.overrides:
            return f"{self.scheme}://{self.overrides[instance.id]}"
        if not instance.address:
            return None
        host = f"[{instance.address}]" if ":" in instance.address else instance.address
        return f"{self.scheme}://{host}:{self.port}"

    def poll(self, instance: Instance) -> Poll:
        base = self.base_url(instance)
        if base is None:
            return Poll(error="no IP address")
        status, document, error = self._request("GET", base + "/last_job", authorized=False)
        if error is not None:
            return Poll(error=error)
        if status != 200:
            return Poll(error=f"HTTP {status}")
        if not valid_last_job(document):
            return Poll(error="the answer is not a /last_job document saying how busy the box is")
        return Poll(document=document)

    def drain(self, instance: Instance) -> tuple[dict[str, Any] | None, str | None]:
        return self._document("POST", instance, "/drain")

    def resume(self, instance: Instance) -> tuple[dict[str, Any] | None, str | None]:
        return self._document("DELETE", instance, "/drain")

    def health(self, instance: Instance) -> tuple[dict[str, Any] | None, str | None]:
        return self._document("GET", instance, "/health", authorized=False)

    def _document(self, method: str, instance: Instance, path: str,
                  authorized: bool = True) -> tuple[dict[str, Any] | None, str | None]:
        base = self.base_url(instance)
        if base is None:
            return None, "no IP address"
        status, document, error = self._request(method, base + path, authorized=authorized)
        if error is not None:
            return None, error
        if status not in (200, 202) or not isinstance(document, dict):
            return None, f"HTTP {status}"
        return document, None

    def _request(self, method: str, url: str, authorized: bool) -> tuple[int, Any, str | None]:
        headers = {"Accept": "application/json"}
        if authorized and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            answer = self.http.request(method, url, headers=headers, body=b"" if method == "POST" else None,
                                       limit=1024 * 1024)
        except HttpFailure as error:
            return 0, None, str(error)
        if answer.status >= 300:
            return answer.status, None, None
        status, body = answer.status, answer.body
        try:
            return status, json.loads(body), None
        except ValueError:
            return status, None, "the answer is not JSON"


# The fields of a box's /last_job document a report shows.
_SHOWN = ("idle_seconds", "running_jobs", "queued_jobs", "draining")


@dataclass(frozen=True)
class ReapOptions:
    tag_key: str
    tag_value: str | None
    idle_threshold: float
    unreachable_threshold: float
    drain: bool
    dry_run: bool
    private_address: bool


class Reaper:
    def __init__(self, options: ReapOptions, ec2: Any, client: ResponderClient, state: UnreachableLog) -> None:
        self.options = options
        self.ec2 = ec2
        self.client = client
        self.state = state

    def run(self, now: float) -> tuple[list[Report], bool]:
        """Judge every tagged running instance and act; (reports, whether every AWS call succeeded)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            instances = list_running_instances(self.ec2, self.options.tag_key, self.options.tag_value,
                                               self.options.private_address)
        except (BotoCoreError, ClientError) as error:
            raise ReaperError(f"listing instances failed: {error}") from None
        with ThreadPoolExecutor(max_workers=max(1, min(POLL_WORKERS, len(instances)))) as pool:
            polls = list(pool.map(self.client.poll, instances))
        reports, aws_ok, unreachable = [], True, {}
        for instance, poll in zip(instances, polls):
            report, still_unreachable = self._settle(instance, poll, now)
            if report.verdict == "error":
                aws_ok = False
            if still_unreachable is not None:
                unreachable[instance.id] = still_unreachable
            reports.append(report)
        if not self.options.dry_run:
            self.state.replace(unreachable)
            self.state.save()
        return reports, aws_ok

    def _settle(self, instance: Instance, poll: Poll, now: float) -> tuple[Report, dict[str, Any] | None]:
        options = self.options
        judgement = judge(poll, now, options.idle_threshold, options.unreachable_threshold,
                          self.state.since(instance.id))
        details: dict[str, Any] = {}
        if poll.document is not None:
            details = {k: poll.document.get(k) for k in _SHOWN}
        unreachable = None
        if judgement.unreachable_since is not None:
            details["unreachable_since"] = iso_utc(judgement.unreachable_since)
            unreachable = {"since": iso_utc(judgement.unreachable_since), "address": instance.address,
                           "error": poll.error}
        where = (instance.id, instance.address, self.client.base_url(instance))
        if judgement.action == KEEP:
            return Report(*where, "kept", judgement.reason, details), unreachable
        if options.dry_run:
            return Report(*where, "would_stop", judgement.reason, details), unreachable
        if options.drain and poll.answered:
            refusal, drained = self._drain(instance)
            if refusal is not None:
                return Report(*where, "kept", refusal, details), None
            # What the report shows is the box as the drain left it, not as the poll found it.
            details.update({k: drained.get(k) for k in (*_SHOWN, "drained")})
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.ec2.stop_instances(InstanceIds=[instance.id])
        except (BotoCoreError, ClientError) as error:
            return Report(*where, "error", f"stop_instances failed: {error}", details), unreachable
        return Report(*where, "stopped", judgement.reason, details), None

    def _drain(self, instance: Instance) -> tuple[str | None, dict[str, Any]]:
        """Drain before stopping: a reason to keep the instance after all (None to go ahead), and the box's
        state document as the drain answered it."""
        document, error = self.client.drain(instance)
        if error is not None:
            return f"drain failed ({error}); not stopped", {}
        if document is not None and document.get("drained") is True:
            return None, document
        # A job was accepted between the poll and the drain: the box is busy after all.
        self.client.resume(instance)
        running = document.get("running_jobs") if document else None
        queued = document.get("queued_jobs") if document else None
        return f"a job arrived before the drain ({running} running, {queued} queued); drain lifted", {}


def default_state_file() -> Path:
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "server-responder" / "reaper.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tag-key", default="server-responder",
                        help="tag that marks responder instances (default server-responder)")
    parser.add_argument("--tag-value", help="only instances whose tag has this value (default: any value)")
    parser.add_argument("--idle-minutes", type=float, default=15.0,
                        help="stop an instance idle at least this long (default 15)")
    parser.add_argument("--unreachable-minutes", type=float, default=30.0,
                        help="stop an instance that has not answered for this long (default 30)")
    add_reach_arguments(parser)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each answer (default 10)")
    parser.add_argument("--drain", action="store_true", help="drain an idle instance (POST /drain) before stopping it")
    parser.add_argument("--token-file", metavar="FILE",
                        help="API token for --drain (default $SERVER_RESPONDER_API_KEY)")
    parser.add_argument("--dry-run", action="store_true",
                        help="report what would be stopped; drain nothing, stop nothing, write no state")
    parser.add_argument("--state-file", type=Path, metavar="FILE",
                        help=f"when each instance first failed to answer (default {default_state_file()})")


def add_reach_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, insecure: bool = True) -> None:
    """How to reach the responders of EC2 instances: the region, and the scheme, port and address to use."""
    parser.add_argument("--region", help="AWS region (default from the AWS configuration)")
    parser.add_argument("--scheme", choices=("https", "http"), default="https")
    parser.add_argument("--port", type=int, help="responder port (default 443 for https, 80 for http)")
    if insecure:
        parser.add_argument("--insecure", action="store_true",
                            help="do not verify the responders' TLS certificates")
    parser.add_argument("--private-address", action="store_true",
                        help="reach instances at their private IP addresses (from inside their VPC)")
    parser.add_argument("--address-override", action="append", default=[], metavar="ID=HOST:PORT",
                        help="reach this instance at HOST:PORT instead of its EC2 address (tunnels, tests); "
                             "repeatable")


def responder_port(args: argparse.Namespace) -> int:
    """The port of `--port`, else the scheme's own."""
    if args.port is not None and not 1 <= args.port <= 65535:
        raise UsageError("--port: must be between 1 and 65535")
    return args.port or (443 if args.scheme == "https" else 80)


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    overrides = {}
    for item in items:
        instance_id, separator, target = item.partition("=")
        host, colon, port = target.rpartition(":")
        if not separator or not instance_id.startswith("i-") or not colon or not host or not port.isdigit():
            raise UsageError(f"--address-override: {item!r} is not ID=HOST:PORT (e.g. i-0abc=127.0.0.1:8080)")
        overrides[instance_id] = target
    return overrides


def options_from_args(args: argparse.Namespace) -> ReapOptions:
    for name in ("idle_minutes", "unreachable_minutes", "timeout"):
        if getattr(args, name) < 0 or (name == "timeout" and args.timeout == 0):
            raise UsageError(f"--{name.replace('_', '-')}: must be {'positive' if name == 'timeout' else '>= 0'}")
    if not args.tag_key:
        raise UsageError("--tag-key: must not be empty")
    return ReapOptions(tag_key=args.tag_key, tag_value=args.tag_value, idle_threshold=args.idle_minutes * 60,
                       unreachable_threshold=args.unreachable_minutes * 60, drain=args.drain, dry_run=args.dry_run,
                       private_address=args.private_address)


def drain_token(args: argparse.Namespace, environ: Mapping[str, str]) -> str | None:
    if not args.drain or args.dry_run:
        return None
    if args.token_file:
        try:
            token = Path(args.token_file).read_text().strip()
        except OSError as error:
            raise UsageError(f"--token-file: cannot read {args.token_file}: {error.strerror}") from None
    else:
        token = environ.get("SERVER_RESPONDER_API_KEY", "").strip()
    if not token:
        raise UsageError("--drain needs the API token: --token-file FILE or $SERVER_RESPONDER_API_KEY")
    return token


def ec2_client(region: str | None) -> Any:
    import boto3

    return boto3.session.Session(region_name=region).client("ec2")


def reap(args: argparse.Namespace, environ: Mapping[str, str] = os.environ, out: TextIO = sys.stdout,
         err: TextIO = sys.stderr) -> int:
    """Exit status: 0 done, 1 an AWS call failed, 2 a bad option."""
    from botocore.exceptions import BotoCoreError

    try:
        options = options_from_args(args)
        client = ResponderClient(args.scheme, responder_port(args), args.insecure, args.timeout,
                                 drain_token(args, environ), parse_overrides(args.address_override))
        state = UnreachableLog(args.state_file or default_state_file())
    except UsageError as error:
        print(f"server-responder reap: {error}", file=err)
        return 2
    if state.problem:
        print(f"server-responder reap: {state.problem}", file=err)
    try:
        reaper = Reaper(options, ec2_client(args.region), client, state)
        reports, aws_ok = reaper.run(time.time())
    except (ReaperError, BotoCoreError) as error:
        print(f"server-responder reap: {error}", file=err)
        return 1
    for report in reports:
        print(report.line(), file=out, flush=True)
    return 0 if aws_ok else 1

