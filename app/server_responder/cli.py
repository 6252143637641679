"""The `server-responder` command: serve, submit, sign, config, reap (and cat, prune, presign from cli_results)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from server_responder import __version__
from server_responder.settings import Settings, SettingsError

Command = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, tuple[Command, Callable[[argparse.ArgumentParser], None], str]] = {}


def command(name: str, help_text: str, configure: Callable[[argparse.ArgumentParser], None]):
    def register(function: Command) -> Command:
        COMMANDS[name] = (function, configure, help_text)
        return function

    return register


def load_settings(args: argparse.Namespace, **overrides: object) -> Settings:
    config = getattr(args, "config", None)
    return Settings.from_env(os.environ, Path(config) if config else None, overrides)


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE",
                        help="TOML settings file (default /etc/server-responder/config.toml when present)")


def _serve_options(parser: argparse.ArgumentParser) -> None:
    _config_option(parser)
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8080; 0 picks a free one)")


@command("serve", "run the responder in the foreground", _serve_options)
def serve(args: argparse.Namespace) -> int:
    import cherrypy

    from server_responder.logging_setup import configure_logging
    from server_responder.responder import Responder, ensure_api_key
    from server_responder.web.app import IdleWatchPlugin, ResponderPlugin, UploadPlugin, build_app, server_config

    settings = load_settings(args, host=args.host, port=args.port)
    settings, generated = ensure_api_key(settings)
    configure_logging(settings.log_dir, settings.secrets())
    responder = Responder.create(settings)
    cherrypy.config.update(server_config(settings.host, settings.port))
    cherrypy.tree.mount(build_app(responder), "")
    ResponderPlugin(cherrypy.engine, responder).subscribe()
    UploadPlugin(cherrypy.engine, responder).subscribe()
    IdleWatchPlugin(cherrypy.engine, responder).subscribe()
    if hasattr(cherrypy.engine, "signal_handler"):
        cherrypy.engine.signal_handler.subscribe()
    cherrypy.engine.start()
    if cherrypy.engine.state != cherrypy.engine.states.STARTED:
        print("server-responder: could not start; see the log in " + str(settings.log_dir), file=sys.stderr)
        cherrypy.engine.exit()
        return 1
    host, port = cherrypy.server.bound_addr[:2]
    if generated:
        print(f"Generated an API token; it is stored in {settings.api_token_path} (mode 0600)", flush=True)
    elif settings.api_key is not None and not os.environ.get("SERVER_RESPONDER_API_KEY"):
        print(f"API token: {settings.api_token_path if settings.api_token_path.exists() else 'from the settings'}",
              flush=True)
    print(f"Results in {settings.store}; logs in {settings.log_dir}", flush=True)
    print(f"Server Responder {__version__} listening on http://{host}:{port}", flush=True)
    cherrypy.engine.block()
    return 0


@command("config", "print the effective settings, secrets redacted", _config_option)
def show_config(args: argparse.Namespace) -> int:
    print(json.dumps(load_settings(args).redacted(), indent=2, sort_keys=True))
    return 0


def _sign_options(parser: argparse.ArgumentParser) -> None:
    _config_option(parser)
    parser.add_argument("--script", required=True, metavar="FILE", help="the script to sign, or - for stdin")
    parser.add_argument("--language", default="python")
    parser.add_argument("--results-location", help="the only key the result may be written to")
    expiry = parser.add_mutually_exclusive_group()
    expiry.add_argument("--expires-in", type=int, default=3600, metavar="SECONDS",
                        help="how long the signature is valid (default 3600)")
    expiry.add_argument("--no-expiry", action="store_true", help="a signature that never expires")


@command("sign", "sign a script so a public page can run it without the token", _sign_options)
def sign(args: argparse.Namespace) -> int:
    from server_responder.keys import InvalidKey, validate_key
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
    parser.add_argument("--language", default="python")
    parser.add_argument("--project", help="owner/name of the project, with --command")
    parser.add_argument("--commit", help="commit, comma-separated commits, or history, with --command")
    parser.add_argument("--timeout", type=float, help="seconds before the job is killed")
    parser.add_argument("--results-location")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--insecure", action="store_true", help="do not verify the server's TLS certificate")


@command("submit", "send a job to a responder, wait, print its output, exit with its status", _submit_options)
def submit(args: argparse.Namespace) -> int:
    token = _token(args)
    body: dict[str, object]
    if args.script:
        body = {"type": "script", "language": args.language, "script": _read_input(args.script)}
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
    client = _Client(args.url.rstrip("/"), token, args.insecure)
    status, job = client.request("POST", "/jobs?wait=60", body)
    if status >= 400:
        print(f"server-responder submit: {status} {job.get('error')}: {job.get('detail')}", file=sys.stderr)
        return 2
    while job.get("status") in ("queued", "running"):
        time.sleep(0.5)
        status, job = client.request("GET", f"/jobs/{job['id']}")
    sys.stdout.write(job.get("stdout", ""))
    sys.stderr.write(job.get("stderr", ""))
    if job.get("error"):
        print(f"server-responder submit: job {job['status']}: {job['error']}", file=sys.stderr)
    exit_status = job.get("exit_status")
    return exit_status if isinstance(exit_status, int) else 1


class _Client:
    def __init__(self, base: str, token: str, insecure: bool) -> None:
        import ssl

        self.base = base
        self.token = token
        self.context = ssl._create_unverified_context() if insecure else None

    def request(self, method: str, path: str, body: object = None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Authorization": f"Bearer {self.token}",
                                                  "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=90, context=self.context) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            try:
                return error.code, json.loads(error.read())
            except ValueError:
                return error.code, {"error": error.reason, "detail": ""}


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


def _reap_options(parser: argparse.ArgumentParser) -> None:
    from server_responder.reaper import add_arguments

    add_arguments(parser)


@command("reap", "stop tagged EC2 instances whose responder is idle (the companion host's timer job)", _reap_options)
def reap(args: argparse.Namespace) -> int:
    from server_responder.reaper import reap as reap_instances

    return reap_instances(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="server-responder", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subcommands = parser.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    for name, (_, configure, help_text) in COMMANDS.items():
        configure(subcommands.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    function = COMMANDS[args.subcommand][0]
    try:
        return function(args)
    except SettingsError as error:
        print(f"server-responder: invalid settings: {error}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as error:
        print(f"server-responder {args.subcommand}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


# Imported last: these modules register their commands with the decorator above.
from server_responder import cli_results  # noqa: E402, F401
