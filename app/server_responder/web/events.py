"""A job's events as Server-Sent Events: the HTTP framing of what the job service's live output yields."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator

from server_responder.jobs.output import BadPosition, OutputEvent, Position
from server_responder.responder import Responder
from server_responder.web.http import HttpError, Incoming, Response, Route, Streamed

EVENT_STREAM = "text/event-stream"
# How long a browser's EventSource waits before it reconnects, in milliseconds.
_RETRY_MILLISECONDS = 2000


class EventsApi:
    """`GET /jobs/{id}/events`: the job id is the capability, as for `GET /jobs/{id}`. Each open stream holds an
    HTTP thread, so at most `max_event_streams` are open at once."""

    def __init__(self, responder: Responder) -> None:
        self.jobs = responder.jobs
        self.settings = responder.settings
        self._slots_made = threading.Lock()
        self._open_slots: threading.BoundedSemaphore | None = None

    def routes(self) -> list[Route]:
        return [Route("GET", "/jobs/{job_id}/events", self.job_events,
                      "One job's output and status as they happen (Server-Sent Events)")]

    @property
    def _slots(self) -> threading.BoundedSemaphore:
        with self._slots_made:
            if self._open_slots is None:
                self._open_slots = threading.BoundedSemaphore(self.settings.event_stream_limit)
            return self._open_slots

    def job_events(self, incoming: Incoming, job_id: str) -> Response:
        position = _resume_position(incoming)
        slots = self._slots
        if not slots.acquire(blocking=False):
            raise HttpError(503, "too_many_streams",
                            f"max_event_streams ({self.settings.event_stream_limit}) event streams are open",
                            headers={"Retry-After": "10"})
        try:
            events = self.jobs.events(job_id, position, self.settings.event_keepalive_seconds)
        except BaseException:
            slots.release()
            raise
        if events is None:
            slots.release()
            raise HttpError(404, "not_found", f"no job {job_id}")
        return Response(Streamed(_framed(events), _closer(events, slots.release)), content_type=EVENT_STREAM,
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _resume_position(incoming: Incoming) -> Position:
    """Where the reader left off: the Last-Event-ID header, else `last_event_id` in the query (for clients that
    cannot set headers); from the start when neither is given."""
    for name, given in (("Last-Event-ID", incoming.headers.get("Last-Event-ID")),
                        ("last_event_id", incoming.query.get("last_event_id"))):
        if given:
            try:
                return Position.parse(given)
            except BadPosition as error:
                raise HttpError(400, "bad_request", f"{name}: {error}", field=name) from None
    return Position()


def _framed(events: Iterator[OutputEvent]) -> Iterator[bytes]:
    yield f"retry: {_RETRY_MILLISECONDS}\n\n".encode()
    for event in events:
        yield sse_event(event)


def sse_event(event: OutputEvent) -> bytes:
    if event.kind == "keepalive":
        return b": keepalive\n\n"
    # JSON on one line: the text keeps every byte the job wrote, carriage returns and trailing newlines included.
    lines = [f"event: {event.kind}", "data: " + json.dumps(event.data, separators=(",", ":"))]
    if event.id is not None:
        lines.insert(0, f"id: {event.id}")
    return ("\n".join(lines) + "\n\n").encode()


def _closer(events: Iterator[OutputEvent], release: Callable[[], None]) -> Callable[[], None]:
    """Ends the stream's reading and frees its slot, once, however the stream ends."""
    done = threading.Lock()

    def close() -> None:
        if not done.acquire(blocking=False):
            return
        try:
            close_events = getattr(events, "close", None)
            if close_events is not None:
                close_events()
        finally:
            release()

    return close
