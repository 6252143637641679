"""One service per data dir: a lock taken before anything in it is read, held for the life of the process."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import IO

LOCK_NAME = "serve.lock"


class DataDirInUse(RuntimeError):
    """Another service holds the data dir; the message names it."""


def hold_data_dir(data_dir: Path) -> IO[str]:
    """Lock data_dir for this process and say who holds it; keep the returned file open to keep the lock."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o711)
    path = data_dir / LOCK_NAME
    # Held through a read-only descriptor, so the data dir's disk can still be remounted read-only under it.
    lock = open(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = lock.read().strip() or "another process"
        lock.close()
        raise DataDirInUse(f"{data_dir} is in use by the running service ({holder}); not starting") from None
    # The kernel drops the lock with the process, so a crashed service never leaves a stale one.
    with open(path, "w") as holder:
        holder.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")
    return lock
