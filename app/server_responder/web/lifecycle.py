"""The /drain routes: refuse new jobs while the queued and running ones finish, and resume."""

from __future__ import annotations

from server_responder.responder import Responder
from server_responder.web.http import Incoming, Response, Route

MAX_DRAIN_WAIT_SECONDS = 600.0


class LifecycleApi:
    """Draining the box before it is stopped, and resuming it."""

    def __init__(self, responder: Responder) -> None:
        self.responder = responder

    def routes(self) -> list[Route]:
        return [
            Route("POST", "/drain", self.start_drain, "Stop accepting jobs and let the queued ones finish (token)"),
            Route("DELETE", "/drain", self.end_drain, "Accept jobs again (token)"),
        ]

    def start_drain(self, incoming: Incoming) -> Response:
        incoming.require_token()
        wait = incoming.number_param("wait", 0.0, MAX_DRAIN_WAIT_SECONDS)
        self.responder.drain.drain("api")
        self.responder.drain.wait_until_drained(wait)
        status = self.responder.idle_status()
        return Response(status.document(), status=200 if status.drained else 202)

    def end_drain(self, incoming: Incoming) -> Response:
        incoming.require_token()
        self.responder.drain.resume()
        return Response(self.responder.idle_status().document())
