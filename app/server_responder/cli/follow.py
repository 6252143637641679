"""Following a job's events from the command line: its output printed as it arrives, then its record."""

from __future__ import annotations

import http.client
import json
import ssl
import time
import urllib.parse
from collections.abc import Iterator
from typing import TextIO

# Keepalives come every event_keepalive_seconds (15 by default); a stream silent for longer than this is gone.
READ_TIMEOUT_SECONDS = 90.0
RECONNECTS = 5
RECONNECT_DELAY_SECONDS = 1.0


class StreamRefused(Exception):
    """The responder would not stream the job's events (an older responder, or every stream slot taken)."""


def follow_job(base_url: str, job_id: str, *, insecure: bool, out: TextIO, err: TextIO) -> dict:
    """Print the job's stdout to `out` and its stderr to `err` as they arrive; its final record. A dropped
    connection is resumed from the last event seen, so nothing is printed twice."""
    last_event_id: str | None = None
    failures = 0
    while True:
        try:
            for kind, data, event_id in _events(base_url, f"/jobs/{urllib.parse.quote(job_id)}/events",
                                                last_event_id, insecure):
                if event_id is not None:
                    last_event_id = event_id
                if kind in ("stdout", "stderr"):
                    stream = out if kind == "stdout" else err
                    stream.write(data["text"])
                    stream.flush()
                elif kind == "dropped":
                    err.write(f"[{data['bytes']} bytes of {data['stream']} no longer kept, not shown]\n")
                elif kind == "job":
                    return data
        except StreamRefused:
            if last_event_id is None:
                raise
        except (OSError, http.client.HTTPException, ValueError):
            failures += 1
            if failures > RECONNECTS:
                raise
        time.sleep(RECONNECT_DELAY_SECONDS)


def _events(base_url: str, path: str, last_event_id: str | None,
            insecure: bool) -> Iterator[tuple[str, dict, str | None]]:
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme == "https":
        context = ssl.create_default_context()
        if insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=READ_TIMEOUT_SECONDS, context=context)
    else:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=READ_TIMEOUT_SECONDS)
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    try:
        connection.request("GET", parts.path.rstrip("/") + path, headers=headers)
        response = connection.getresponse()
        if response.status != 200:
            raise StreamRefused(f"{response.status} {response.reason}")
        fields: dict[str, str] = {}
        while line := response.readline():
            text = line.decode("utf-8").rstrip("\r\n")
            if text.startswith(":"):
                continue
            if text:
                name, _, value = text.partition(":")
                fields[name] = value.removeprefix(" ")
                continue
            if "data" in fields:
                yield fields.get("event", "message"), json.loads(fields["data"]), fields.get("id")
            fields = {}
    finally:
        connection.close()
