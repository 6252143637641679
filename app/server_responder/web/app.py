"""Building the CherryPy application and the engine plugin that runs the responder's services."""

from __future__ import annotations

import cherrypy
from cherrypy.process.plugins import SimplePlugin

from server_responder.responder import Responder
from server_responder.web.api import JobsApi, StatusApi
from server_responder.web.http import Route, Router, json_error_page, json_unexpected_error
from server_responder.web.lifecycle import LifecycleApi


def api_routes(responder: Responder) -> list[Route]:
    routes: list[Route] = JobsApi(responder).routes()
    routes.extend(LifecycleApi(responder).routes())
    status = StatusApi(responder, routes)
    routes.extend(status.routes())
    return routes


def build_app(responder: Responder) -> cherrypy.Application:
    settings = responder.settings
    assert settings.api_key is not None, "ensure_api_key() runs before build_app()"
    router = Router(api_routes(responder), settings.api_key.reveal(), settings.max_body_bytes,
                    settings.cors_origins)
    config = {
        "/": {
            # Bodies are read by the routes themselves, bounded, so a webhook can verify the raw bytes.
            "request.process_request_body": False,
            "request.show_tracebacks": False,
            "request.error_response": json_unexpected_error,
            "error_page.default": json_error_page,
            "tools.encode.on": False,
            "response.headers.server": "server-responder",
        }
    }
    return cherrypy.Application(router, "", config)


class ResponderPlugin(SimplePlugin):
    """Starts the job workers before the HTTP server listens and stops them after it closes."""

    def __init__(self, bus, responder: Responder) -> None:
        super().__init__(bus)
        self.responder = responder

    def start(self) -> None:
        self.responder.start()

    start.priority = 40

    def stop(self) -> None:
        self.responder.stop()

    stop.priority = 60


def server_config(host: str, port: int) -> dict:
    return {
        "environment": "production",
        "server.socket_host": host,
        "server.socket_port": port,
        # Body limits are enforced by the routes, which answer 413 as JSON.
        "server.max_request_body_size": 0,
        "server.thread_pool": 16,
        "engine.autoreload.on": False,
        "log.screen": False,
        "checker.on": False,
    }
