"""A real HTTP receiver on loopback that records callbacks and answers with scripted statuses."""

from __future__ import annotations

import http.server
import json
import threading
import time
from typing import Any


class CallbackReceiver:
    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.received: list[dict[str, Any]] = []
        self.attempts = 0
        self._condition = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._condition:
                    receiver.attempts += 1
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    if status < 300:
                        receiver.received.append({"path": self.path, "content_type": self.headers["Content-Type"],
                                                  "document": json.loads(body)})
                    receiver._condition.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/done"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> CallbackReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, count: int, timeout: float = 30) -> list[dict[str, Any]]:
        """The callbacks taken (2xx), once there are `count` of them."""
        self._wait(lambda: len(self.received) >= count, timeout, lambda: f"{len(self.received)} of {count} callbacks "
                                                                          "arrived")
        return list(self.received)

    def wait_for_attempts(self, count: int, timeout: float = 30) -> None:
        """Until `count` requests came in, whatever they were answered."""
        self._wait(lambda: self.attempts >= count, timeout, lambda: f"{self.attempts} of {count} attempts came")

    def answer(self, statuses: list[int]) -> None:
        """Answer the next requests with these statuses (then 200), instead of what was scripted."""
        with self._condition:
            self.statuses = list(statuses)

    def _wait(self, reached, timeout: float, failure) -> None:
        deadline = time.monotonic() + timeout
        with self._condition:
            while not reached():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(failure())
                self._condition.wait(remaining)
