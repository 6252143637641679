"""Files the service keeps in its data dir, written whole or not at all."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


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
