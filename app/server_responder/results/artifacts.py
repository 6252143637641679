"""Files a job leaves in its `artifacts/` directory, stored beside its result."""

from __future__ import annotations

import logging
import mimetypes
import os
import stat
from pathlib import Path
from typing import Any

from server_responder.results.keys import InvalidKey, artifact_index_key, artifact_key, validate_key
from server_responder.results.store import ResultStore, put_json

log = logging.getLogger("server_responder.jobs")
MAX_ARTIFACTS = 200


def store_artifacts(directory: Path, location: str, store: ResultStore, limit_bytes: int) -> list[dict[str, Any]]:
    """Upload regular files below `directory` (never following links) and write the index document."""
    stored: list[dict[str, Any]] = []
    total = 0
    for path in sorted(_regular_files(directory)):
        name = str(path.relative_to(directory))
        try:
            validate_key(name, "artifact name")
        except InvalidKey as error:
            log.warning("artifact skipped", extra={"event": "artifact.skipped", "artifact": name, "reason": str(error)})
            continue
        body = _read_no_follow(path)
        if body is None:
            continue
        if len(stored) >= MAX_ARTIFACTS or total + len(body) > limit_bytes:
            log.warning("artifact limit reached", extra={"event": "artifact.limit", "artifact": name})
            break
        total += len(body)
        key = artifact_key(location, name)
        content_type = mimetypes.guess_type(name)[0] or _sniff(body)
        store.put(key, body, content_type)
        stored.append({"name": name, "key": key, "url": store.url(key), "content_type": content_type,
                       "size": len(body)})
    if stored:
        put_json(store, artifact_index_key(location), stored)
    return stored


def _regular_files(directory: Path):
    for root, directories, names in os.walk(directory, followlinks=False):
        directories[:] = [d for d in directories if not os.path.islink(os.path.join(root, d))]
        for name in names:
            path = Path(root) / name
            if stat.S_ISREG(path.lstat().st_mode):
                yield path


def _read_no_follow(path: Path) -> bytes | None:
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        log.warning("artifact unreadable", extra={"event": "artifact.unreadable", "artifact": str(path),
                                                 "reason": error.strerror})
        return None
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        return handle.read()


def _sniff(body: bytes) -> str:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return "application/octet-stream"
    return "text/plain; charset=utf-8"
