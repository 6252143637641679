"""`sign` a script for a public page, `submit` a job to a responder and wait for it."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from http import HTTPStatus
from pathlib import Path

from server_responder.cli import fleet
from server_responder.cli.common import Command, config_option, job_exit_status, load_settings, print_job_output
from server_responder.http_client import HttpClient
from server_responder.settings import Settings


def _sign_options(parser: argparse.ArgumentParser) -> None:
    config_option(parser)
    parser.add_argument("--script", required=True, metavar="FILE", help="the script to sign, or - for stdin")
    parser.add_argument("--language", default="python")
    parser.add_argument("--results-location", help="the only key the result may be written to")
    expiry = parser.add_mutually_exclusive_group()
    expiry.add_argument("--expires-in", type=int, default=3600, metavar="SECONDS",
                        help="how long the signature is valid (default 3600)")
    expiry.add_argument("--no-expiry", action="store_true",
                        help="a signature that never expires (accepted only where signature_max_age_seconds is 0)")


def sign(args: argparse.Namespace) -> int:
    from server_responder.results.keys import InvalidKey, validate_key
    from server_responder.signing import sign_script

    settings = load_settings(args)
    if settings.code_secret is None:
        print("server-responder sign: no code secret (set SERVER_RESPONDER_CODE_SECRET or code_secret)",
              file=sys.stderr)
        return 2
    if args.results_location is not None:
        try:
            validate_key(args.results_location)
        except InvalidKey as error:
            print(f"server-responder sign: {error}", file=sys.stderr)
            return 2
    script = _read_input(args.script)
    signed = sign_script(settings.code_secret.reveal(), script, args.language, args.results_location,
                         expires_in=None if args.no_expiry else args.expires_in)
    print(json.dumps(signed.as_fields(), indent=2))
    return 0


def _submit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("SERVER_RESPONDER_URL", "http://127.0.0.1:8080"),
                        help="the responder (default $SERVER_RESPONDER_URL or http://127.0.0.1:8080)")
    parser.add_argument("--token-file", metavar="FILE",
                        help="file holding the API token (default $SERVER_RESPONDER_API_KEY, else the "
                             "token file of the local data dir)")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--script", metavar="FILE", help="a script file to run, or - for stdin")
    what.add_argument("--command", help="a command to run in a checkout of --project")
    parser.add_argument("--language", help="the script's language (default: from the file's suffix, .sh sh, "
                                           ".py python, .rb ruby, .js node; else python)")
    parser.add_argument("--project", help="owner/name of the project, with --command")
    parser.add_argument("--commit", help="commit, comma-separated commits, or history, with --command")
    parser.add_argument("--timeout", type=float, help="seconds before the job is killed")
    parser.add_argument("--results-location")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--insecure", action="store_true", help="do not verify the server's TLS certificate")
    parser.add_argument("--follow", action="store_true", help="print the job's output as it arrives")
    fleet.add_submit_options(parser)


def job_request(args: argparse.Namespace) -> dict[str, object]:
    """The JSON job request of submit's options, as `POST /jobs` takes it (and a queue message carries it)."""
    body: dict[str, object]
    if args.script:
        body = {"type": "script", "language": args.language or _language_of(args.script),
                "script": _read_input(args.script)}
    else:
        body = {"type": "command", "command": args.command, "project": args.project}
        if args.commit:
            body["commit"] = args.commit
    if args.timeout is not None:
        body["timeout"] = args.timeout
    if args.results_location:
        body["results_location"] = args.results_location
    if args.env:
        body["env"] = dict(item.split("=", 1) for item in args.env if "=" in item)
    return body


def submit(args: argparse.Namespace) -> int:
    body = job_request(args)
    if fleet.queued(args):
        return fleet.submit_to_queue(args, body)
    token = _token(args)
    url = fleet.wake_for_submit(args) if args.wake_instance_id else args.url
    if url is None:
        return 1
    client = _Client(url.rstrip("/"), token, args.insecure)
    status, job = client.request("POST", "/jobs" if args.follow else "/jobs?wait=60", body)
    if status >= 400:
        print(f"server-responder submit: {status} {job.get('error')}: {job.get('detail')}", file=sys.stderr)
        return 2
    followed = _followed(client, job, args.insecure) if args.follow else None
    while followed is None and job.get("status") in ("queued", "running"):
        time.sleep(0.5)
        status, job = client.request("GET", f"/jobs/{job['id']}")
    if followed is not None:
        return job_exit_status(followed)
    return print_job_output(job)


def _followed(client: _Client, job: dict, insecure: bool) -> dict | None:
    """The job once final, its output printed as it came; None when the responder would not stream it."""
    from server_responder.cli.follow import StreamRefused, follow_job

    try:
        return follow_job(client.base, job["id"], insecure=insecure, out=sys.stdout, err=sys.stderr)
    except StreamRefused:
        return None


def _language_of(script: str) -> str:
    from server_responder.jobs.script import language_of_file
    from server_responder.settings import SettingsError

    try:
        configured = Settings.from_env(os.environ).languages
    except SettingsError:
        configured = {}
    return language_of_file(script, configured) or "python"


class _Client:
    def __init__(self, base: str, token: str, insecure: bool) -> None:
        self.base = base
        self.token = token
        self.http = HttpClient(timeout=90, verify_certificates=not insecure)

    def request(self, method: str, path: str, body: object = None) -> tuple[int, dict]:
        answer = self.http.json(method, self.base + path, body, headers={"Authorization": f"Bearer {self.token}"})
        if answer.status < 400:
            return answer.status, answer.json()
        try:
            return answer.status, answer.json()
        except ValueError:
            return answer.status, {"error": _reason_phrase(answer.status), "detail": ""}


def _reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return str(status)


def _token(args: argparse.Namespace) -> str:
    if args.token_file:
        return Path(args.token_file).read_text().strip()
    if os.environ.get("SERVER_RESPONDER_API_KEY"):
        return os.environ["SERVER_RESPONDER_API_KEY"]
    settings = Settings.from_env(os.environ)
    if settings.api_key is not None:
        return settings.api_key.reveal()
    return settings.api_token_path.read_text().strip()


def _read_input(name: str) -> str:
    return sys.stdin.read() if name == "-" else Path(name).read_text()


COMMANDS = (
    Command("sign", "sign a script so a public page can run it without the token", _sign_options, sign),
    Command("submit", "send a job to a responder, wait, print its output, exit with its status", _submit_options,
            submit),
)
