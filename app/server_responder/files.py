"""Files the service keeps in its data dir, written whole or not at all."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

COPY_CHUNK_BYTES = 1024 * 1024


def write_atomically(path: Path, body: bytes, mode: int = 0o640, durable: bool = False) -> None:
    """Write `body` to `path` so that readers see the old or the new file, never a part.

    The rename alone survives a crash of the process; `durable` also survives a crash of the machine.
    """
    stream_atomically(path, io.BytesIO(body), mode=mode, durable=durable)


def stream_atomically(path: Path, source: BinaryIO, *, head: bytes = b"", mode: int = 0o640,
                      durable: bool = False) -> int:
    """Like `write_atomically`, with `head` then everything `source` reads, a chunk at a time: the bytes
    copied from `source`."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    copied = 0
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(head)
            while chunk := source.read(COPY_CHUNK_BYTES):
                handle.write(chunk)
                copied += len(chunk)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return copied
