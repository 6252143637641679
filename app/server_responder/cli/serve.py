"""`serve` runs the responder in the foreground; `config` prints the settings it would use."""

from __future__ import annotations

import argparse
import json
import os
import sys

from server_responder import __version__
from server_responder.cli.common import Command, config_option, load_settings


def _serve_options(parser: argparse.ArgumentParser) -> None:
    config_option(parser)
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8080; 0 picks a free one)")


def serve(args: argparse.Namespace) -> int:
    import cherrypy

    from server_responder.instance_lock import DataDirInUse, hold_data_dir
    from server_responder.jobs.affinity import announce_pinning, pin_service
    from server_responder.jobs.containment import make_service_undumpable
    from server_responder.logging_setup import configure_logging
    from server_responder.responder import Responder, ensure_api_key
    from server_responder.web.app import (
        FleetPlugin, IdleWatchPlugin, ResponderPlugin, UploadPlugin, build_app, connection_limits, server_config,
    )
    from server_responder.web.server import install_server

    settings = load_settings(args, host=args.host, port=args.port)
    try:
        data_dir_lock = hold_data_dir(settings.data_dir)
    except DataDirInUse as busy:
        print(f"server-responder: {busy}", file=sys.stderr)
        return 1
    # Before any secret is read: jobs of the service's own user can't read /proc/<pid>/environ or ptrace it.
    make_service_undumpable()
    settings, generated = ensure_api_key(settings)
    configure_logging(settings.log_dir, settings.secrets())
    if settings.pin_service_cpu:
        announce_pinning(pin_service())  # before the threads start: they inherit it
    responder = Responder.create(settings)
    cherrypy.config.update(server_config(settings))
    install_server(connection_limits(settings))
    cherrypy.tree.graft(build_app(responder), "")
    ResponderPlugin(cherrypy.engine, responder).subscribe()
    UploadPlugin(cherrypy.engine, responder).subscribe()
    IdleWatchPlugin(cherrypy.engine, responder).subscribe()
    FleetPlugin(cherrypy.engine, responder).subscribe()
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
    data_dir_lock.close()
    return 0


def show_config(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    shown = settings.redacted()
    if settings.api_key is None:
        # The service then uses the token it generated into the data dir (never printed here).
        token_file = settings.api_token_path
        shown["api_key"] = (f"<generated, in {token_file}>" if token_file.is_file()
                            else f"<unset: generated into {token_file} at the first start>")
    print(json.dumps(shown, indent=2, sort_keys=True))
    return 0


COMMANDS = (
    Command("serve", "run the responder in the foreground", _serve_options, serve),
    Command("config", "print the effective settings, secrets redacted", config_option, show_config),
)
