"""Building the WSGI application CherryPy serves and the engine plugins that run the responder's services."""

from __future__ import annotations

import logging
import time

from cherrypy.process.plugins import Monitor, SimplePlugin

from server_responder.lifecycle.idle_watch import IdleWatch
from server_responder.responder import Responder
from server_responder.settings import Settings
from server_responder.web.api import JobsApi, StatusApi
from server_responder.web.events import EventsApi
from server_responder.web.github import GitHubApi
from server_responder.web.http import Route, Router
from server_responder.web.last_request import RequestRecorder
from server_responder.web.lifecycle import LifecycleApi
from server_responder.web.metrics import MetricsApi
from server_responder.web.pages import PagesApi
from server_responder.web.server import ConnectionLimits

lifecycle_log = logging.getLogger("server_responder.lifecycle")


def api_routes(responder: Responder) -> list[Route]:
    recorder = RequestRecorder(lambda: responder.settings.secrets())
    routes: list[Route] = JobsApi(responder, recorder).routes()
    routes.extend(GitHubApi(responder).routes())
    routes.extend(LifecycleApi(responder).routes())
    routes.extend(EventsApi(responder).routes())
    routes.extend(MetricsApi(responder).routes())
    status = StatusApi(responder, routes)
    routes.extend(status.routes())
    routes.extend(PagesApi(responder, status, recorder).routes())
    return routes


def build_app(responder: Responder) -> Router:
    """The WSGI application of every route, for `cherrypy.tree.graft`: CherryPy's server and engine run it,
    its own request handling does not (bodies are read by the routes themselves, bounded, so a webhook can
    verify the raw bytes; errors are JSON; the query string is parsed by the routes, bounded)."""
    settings = responder.settings
    assert settings.api_key is not None, "ensure_api_key() runs before build_app()"
    return Router(api_routes(responder), settings.api_key.reveal(), settings.max_body_bytes, settings.cors_origins)


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

    def subscribe(self) -> None:
        super().subscribe()
        # Before the HTTP server (25), which waits for the threads that serve event streams.
        self.bus.subscribe("stop", self.stop_followers, priority=20)

    def unsubscribe(self) -> None:
        super().unsubscribe()
        self.bus.unsubscribe("stop", self.stop_followers)

    def stop_followers(self) -> None:
        self.responder.jobs.stop_followers()


class FleetPlugin(SimplePlugin):
    """Takes jobs from the queue and keeps the box's place in its group, for a box in a fleet.

    Started after the job workers, stopped after them: a job the stop interrupts gives its message back at once.
    """

    def __init__(self, bus, responder: Responder) -> None:
        super().__init__(bus)
        self.fleet = responder.fleet

    def start(self) -> None:
        if self.fleet is not None:
            self.fleet.start()

    start.priority = 45

    def stop(self) -> None:
        if self.fleet is not None:
            self.fleet.stop()

    stop.priority = 65


class UploadPlugin(Monitor):
    """Delivers spooled uploads in the background, also those left by an earlier run.

    `UploadSpool.deliver_due` never raises: an exception would stop a CherryPy Monitor for good.
    """

    def __init__(self, bus, responder: Responder) -> None:
        super().__init__(bus, responder.uploads.deliver_due, frequency=responder.settings.upload_retry_seconds,
                         name="upload-spool")


class IdleWatchPlugin(Monitor):
    """Runs the idle watch every `idle_check_seconds`; its callback never raises, since that stops a Monitor."""

    def __init__(self, bus, responder: Responder) -> None:
        self.watch = IdleWatch.for_responder(responder)
        frequency = responder.settings.idle_check_seconds if self.watch.policy.enabled else 0
        super().__init__(bus, self.check, frequency=frequency, name="IdleWatch")

    def start(self) -> None:
        if not self.watch.policy.enabled:
            lifecycle_log.info("idle watch off", extra={"event": "idle.watch_off"})
        super().start()

    # After the job workers (40) and the HTTP server (75), so the first check sees the box as it serves.
    start.priority = 80

    def check(self) -> None:
        try:
            self.watch.check(time.time())
        except Exception:
            lifecycle_log.exception("idle check failed", extra={"event": "idle.check_error"})


def server_config(settings: Settings) -> dict:
    return {
        "environment": "production",
        "server.socket_host": settings.host,
        "server.socket_port": settings.port,
        # The routes answer 413 themselves; the server refuses what is larger before reading it.
        "server.max_request_body_size": largest_body_bytes(settings),
        "server.thread_pool": settings.http_threads,
        # The listen backlog: CherryPy's default of 5 resets connections a burst of clients opens at once.
        "server.socket_queue_size": 128,
        "engine.autoreload.on": False,
        "log.screen": False,
        "checker.on": False,
    }


def largest_body_bytes(settings: Settings) -> int:
    """The largest body any route takes: a webhook's, when the webhook route is there."""
    webhooks = settings.max_webhook_body_bytes if settings.github_secret is not None else 0
    return max(settings.max_body_bytes, webhooks)


def connection_limits(settings: Settings) -> ConnectionLimits:
    return ConnectionLimits(header_timeout=settings.request_header_timeout,
                            body_timeout=settings.request_body_timeout,
                            per_client=settings.max_connections_per_client)
