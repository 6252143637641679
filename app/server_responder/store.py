"""Where results live: the `ResultStore` interface and its local-directory implementation."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from server_responder.keys import validate_key

if TYPE_CHECKING:
    from server_responder.settings import Settings

JSON_TYPE = "application/json"
_DATA_SUFFIX = "@data"
_TYPE_SUFFIX = "@type"


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

    def get(self, key: str) -> StoredObject | None: ...

    def delete(self, key: str) -> None: ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...

    def url(self, key: str) -> str: ...


def put_json(store: ResultStore, key: str, document: Any) -> None:
    store.put(key, json.dumps(document, indent=2, sort_keys=True).encode() + b"\n", JSON_TYPE)


def get_json(store: ResultStore, key: str) -> Any | None:
    stored = store.get(key)
    return None if stored is None else json.loads(stored.body)


class LocalResultStore:
    """Objects as files below a root directory.

    A key `a/b` may coexist with `a/b/c` (a project index beside its commits), so an object's bytes
    live in `<key>@data` and its content type in `<key>@type`; `@` is outside the key alphabet.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o750)

    def _path(self, key: str, suffix: str) -> Path:
        validate_key(key, "key")
        return self.root / (key + suffix)

    def put(self, key: str, body: bytes, content_type: str) -> None:
        data_path = self._path(key, _DATA_SUFFIX)
        data_path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        write_atomically(self._path(key, _TYPE_SUFFIX), content_type.encode())
        write_atomically(data_path, body)

    def get(self, key: str) -> StoredObject | None:
        try:
            body = self._path(key, _DATA_SUFFIX).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        try:
            content_type = self._path(key, _TYPE_SUFFIX).read_text().strip()
        except FileNotFoundError:
            content_type = "application/octet-stream"
        return StoredObject(key, body, content_type)

    def delete(self, key: str) -> None:
        for suffix in (_DATA_SUFFIX, _TYPE_SUFFIX):
            self._path(key, suffix).unlink(missing_ok=True)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        for directory, _, names in os.walk(self.root):
            for name in sorted(names):
                if not name.endswith(_DATA_SUFFIX):
                    continue
                path = Path(directory) / name
                key = str(path.relative_to(self.root))[: -len(_DATA_SUFFIX)]
                if key.startswith(prefix):
                    stat = path.stat()
                    yield ObjectInfo(key, stat.st_size, stat.st_mtime)

    def url(self, key: str) -> str:
        return f"/results/{key}"


def write_atomically(path: Path, body: bytes, mode: int = 0o640, durable: bool = False) -> None:
    """Write `body` to `path` so that readers see the old or the new file, never a part.

    The rename alone survives a crash of the process; `durable` also survives a crash of the machine.
    """
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(body)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def open_store(location: str, settings: Settings | None = None) -> ResultStore:
    """The store a `store` setting names: a path, a file:// URL or an s3://bucket/prefix URL."""
    if location.startswith("s3://"):
        from server_responder.s3_store import S3ResultStore

        return S3ResultStore.open(location, endpoint_url=settings.s3_endpoint_url if settings else "",
                                  public=settings.public_results if settings else False)
    if location.startswith("file://"):
        location = location[len("file://"):]
    return LocalResultStore(Path(location))
