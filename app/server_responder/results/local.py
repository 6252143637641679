"""The local-directory result store."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from server_responder.files import stream_atomically, write_atomically
from server_responder.results.keys import validate_key
from server_responder.results.store import ObjectInfo, StoredObject

_DATA_SUFFIX = "@data"
_TYPE_SUFFIX = "@type"
# The type of most objects (result documents): an object without a type file has it, so they need one file.
_DEFAULT_TYPE = "application/json"


class LocalResultStore:
    """Objects as files below a root directory.

    A key `a/b` may coexist with `a/b/c` (a project index beside its commits), so an object's bytes
    live in `<key>@data` and its content type in `<key>@type` (none for JSON); `@` is outside the key alphabet.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o750)

    def _path(self, key: str, suffix: str) -> Path:
        validate_key(key, "key")
        return self.root / (key + suffix)

    def put(self, key: str, body: bytes, content_type: str) -> None:
        write_atomically(self._typed_data_path(key, content_type), body)

    def put_file(self, key: str, source: BinaryIO, size: int, content_type: str) -> None:
        stream_atomically(self._typed_data_path(key, content_type), source)

    def _typed_data_path(self, key: str, content_type: str) -> Path:
        """Where `key`'s bytes go, once its directory exists and its content type is written."""
        data_path = self._path(key, _DATA_SUFFIX)
        data_path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        type_path = self._path(key, _TYPE_SUFFIX)
        if content_type == _DEFAULT_TYPE:
            type_path.unlink(missing_ok=True)
        else:
            write_atomically(type_path, content_type.encode())
        return data_path

    def get(self, key: str) -> StoredObject | None:
        try:
            body = self._path(key, _DATA_SUFFIX).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        try:
            content_type = self._path(key, _TYPE_SUFFIX).read_text().strip()
        except FileNotFoundError:
            content_type = _DEFAULT_TYPE
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
