"""What keeps the service from working fully: its last write failures, and a data dir low on space."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

# Below this much free space in the data dir the next spool write may fail, so /health says so first.
LOW_SPACE_BYTES = 1024 * 1024

_WRITE_FAULTS = {
    errno.ENOSPC: "is full",
    errno.EDQUOT: "is over its quota",
    errno.EROFS: "is read-only",
    errno.EACCES: "is not writable by the service",
    errno.EPERM: "is not writable by the service",
    errno.EIO: "has an I/O error",
}


def is_storage_fault(error: BaseException) -> bool:
    """Whether `error` says the disk itself cannot take writes, rather than one path being wrong."""
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO)


def write_fault(place: str, error: BaseException) -> str:
    """A failed write in the words an operator acts on: `the data dir /x is full (No space left on device)`."""
    if isinstance(error, OSError) and error.errno in _WRITE_FAULTS:
        return f"{place} {_WRITE_FAULTS[error.errno]} ({error.strerror})"
    if isinstance(error, OSError) and error.strerror:
        return f"{place} could not be written ({error.strerror})"
    return f"{place} could not be written ({error or type(error).__name__})"


class Degradations:
    """The reasons `/health` reports as `degraded`: each source's last failure until its next success,
    and what `statvfs` says about the data dir at the moment of asking."""

    def __init__(self, data_dir: Path, low_space_bytes: int = LOW_SPACE_BYTES) -> None:
        self.data_dir = Path(data_dir)
        self.low_space_bytes = low_space_bytes
        self._lock = threading.Lock()
        self._failures: dict[str, str] = {}

    def failed(self, source: str, reason: str) -> None:
        with self._lock:
            self._failures[source] = reason

    def recovered(self, source: str) -> None:
        if source in self._failures:
            with self._lock:
                self._failures.pop(source, None)

    def reasons(self) -> list[str]:
        with self._lock:
            reasons = list(self._failures.values())
        for reason in self._space():
            if reason not in reasons:
                reasons.append(reason)
        return reasons

    def _space(self) -> list[str]:
        place = f"the data dir {self.data_dir}"
        try:
            found = os.statvfs(self.data_dir)
        except OSError as error:
            return [f"{place} cannot be examined ({error.strerror})"]
        if found.f_flag & os.ST_RDONLY:
            return [f"{place} is read-only ({os.strerror(errno.EROFS)})"]
        reasons = []
        free = found.f_bavail * found.f_frsize
        if free < self.low_space_bytes:
            reasons.append(f"{place} is almost full ({free} bytes free)")
        if found.f_files and found.f_favail == 0:
            reasons.append(f"{place} has no free inodes")
        return reasons
