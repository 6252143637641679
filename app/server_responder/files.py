"""Files the service keeps in its data dir, written whole or not at all."""

from __future__ import annotations

import contextlib
import io
import itertools
import os
from pathlib import Path
from typing import BinaryIO

COPY_CHUNK_BYTES = 1024 * 1024


# Temporary names unique in this process without asking the random module: a counter beside the pid.
_TEMPORARY_NUMBERS = itertools.count()


def write_atomically(path: Path, body: bytes, mode: int = 0o640, durable: bool = False) -> None:
    """Write `body` to `path` so that readers see the old or the new file, never a part.

    The rename alone survives a crash of the process; `durable` also survives a crash of the machine.
    """
    stream_atomically(path, io.BytesIO(body), mode=mode, durable=durable)


def stream_atomically(path: Path, source: BinaryIO, *, head: bytes = b"", mode: int = 0o640,
                      durable: bool = False) -> int:
    """Like `write_atomically`, with `head` then everything `source` reads, a chunk at a time: the bytes
    copied from `source`."""
    temporary = f"{path.parent}/.tmp-{os.getpid()}-{next(_TEMPORARY_NUMBERS)}"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    copied = 0
    try:
        try:
            write_all(descriptor, head)
            while chunk := source.read(COPY_CHUNK_BYTES):
                write_all(descriptor, chunk)
                copied += len(chunk)
            os.fchmod(descriptor, mode)
            if durable:
                os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return copied


def write_file(path: Path, body: bytes, mode: int) -> None:
    """Write `body` to `path` (replacing what is there, never through a symbolic link) with exactly `mode`,
    in a few system calls: no buffering, no umask."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        write_all(descriptor, body)
        os.fchmod(descriptor, mode)
    finally:
        os.close(descriptor)


def write_all(descriptor: int, data: bytes) -> None:
    """os.write until every byte is written (a write may take only part)."""
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view):]
