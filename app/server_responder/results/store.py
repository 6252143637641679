"""Where results live: the `ResultStore` interface every store implements, and JSON on top of it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol


JSON_TYPE = "application/json"


@dataclass(frozen=True)
class StoredObject:
    key: str
    body: bytes
    content_type: str


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: float


class StoreUnavailable(OSError):
    """A remote store could not be reached or refused the request; worth retrying later."""


class ResultStore(Protocol):
    def put(self, key: str, body: bytes, content_type: str) -> None: ...

    def put_file(self, key: str, source: BinaryIO, size: int, content_type: str) -> None:
        """Store what `source` reads (`size` bytes at most), a chunk at a time, never whole in memory."""
        ...

    def get(self, key: str) -> StoredObject | None: ...

    def delete(self, key: str) -> None: ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...

    def url(self, key: str) -> str: ...


def put_json(store: ResultStore, key: str, document: Any) -> None:
    store.put(key, indented_json(document).encode() + b"\n", JSON_TYPE)


def indented_json(document: Any) -> str:
    """`json.dumps(document, indent=2, sort_keys=True)`. An object whose values hold nothing nested (a job's
    result document, as a rule) is encoded by the C encoder with the indentation as its separator: the same
    text, several times faster than the Python encoder that `indent` means."""
    if isinstance(document, dict) and document and all(
            isinstance(key, str) and _flat(value) for key, value in document.items()):
        inner = json.dumps(document, sort_keys=True, separators=(",\n  ", ": "))
        return "{\n  " + inner[1:-1] + "\n}"
    return json.dumps(document, indent=2, sort_keys=True)


def _flat(value: Any) -> bool:
    return not isinstance(value, (dict, list, tuple)) or not value


def get_json(store: ResultStore, key: str) -> Any | None:
    stored = store.get(key)
    return None if stored is None else json.loads(stored.body)
