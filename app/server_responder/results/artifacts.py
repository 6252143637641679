"""Files a job leaves in its `artifacts/` directory, stored beside its result.

The job owned its workspace and may have left anything there: links to the service's files, FIFOs, devices,
sparse files of any size, directories swapped for links. So the directory and every entry below it are opened
relative to their parent's descriptor without following links, only regular files are taken, and each is
streamed to the store, never more than the size `fstat` gave before its first byte was read.
"""

from __future__ import annotations

import codecs
import errno
import io
import logging
import mimetypes
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server_responder.results.keys import MAX_KEY_LENGTH, InvalidKey, artifact_index_key, artifact_key, validate_key
from server_responder.results.store import ResultStore, put_json
from server_responder.settings import Settings

log = logging.getLogger("server_responder.jobs")
ARTIFACTS_DIRECTORY = "artifacts"
# The name a reason about the artifacts directory itself is listed under.
WHOLE_DIRECTORY = "."
SNIFF_BYTES = 4096
_SHOWN_NAME_CHARACTERS = 300
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: an entry swapped for a FIFO after its lstat must not block the open.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


@dataclass(frozen=True)
class ArtifactLimits:
    file_bytes: int
    total_bytes: int
    count: int

    @classmethod
    def of(cls, settings: Settings) -> ArtifactLimits:
        return cls(settings.artifact_file_limit_bytes, settings.artifact_limit_bytes, settings.artifact_count_limit)

    @property
    def entries_examined(self) -> int:
        """How many directory entries one job's walk looks at: a job can make millions, each costing the walk."""
        return 4 * self.count + 100


@dataclass
class Artifacts:
    """What was stored (the index document's entries) and what was skipped, each with its reason."""

    stored: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    total_bytes: int = 0


class _WalkEnded(Exception):
    """No later entry can be stored: the count limit is reached."""


class ArtifactUnreadable(OSError):
    """Reading an artifact's bytes failed (not writing them to the store)."""


def store_artifacts(workspace: Path, location: str, store: ResultStore, limits: ArtifactLimits) -> Artifacts:
    """Store the regular files below `workspace/artifacts` and write the index document."""
    found = Artifacts()
    walk = _Walk(location, store, limits, found)
    try:
        workspace_fd = os.open(workspace, _DIRECTORY_FLAGS)
    except OSError as error:
        walk.skip(WHOLE_DIRECTORY, f"unreadable: {error.strerror}")
        return found
    try:
        walk.directory(workspace_fd, ARTIFACTS_DIRECTORY, "")
    except _WalkEnded:
        pass
    finally:
        os.close(workspace_fd)
    if found.skipped:
        # One line per job: a job can leave hundreds of links.
        log.warning("artifacts skipped", extra={"event": "artifact.skipped", "location": location,
                                                "skipped": len(found.skipped), "first": found.skipped[0]})
    if found.stored:
        put_json(store, artifact_index_key(location), found.stored)
    return found


class _Walk:
    def __init__(self, location: str, store: ResultStore, limits: ArtifactLimits, found: Artifacts) -> None:
        self.location = location
        self.store = store
        self.limits = limits
        self.found = found
        self.entries_left = limits.entries_examined
        self.cut_short = False

    def skip(self, name: str, reason: str) -> None:
        shown = name.encode(errors="surrogateescape").decode(errors="replace")
        if len(shown) > _SHOWN_NAME_CHARACTERS:
            shown = shown[:_SHOWN_NAME_CHARACTERS] + "..."
        self.found.skipped.append({"name": shown, "reason": reason})

    def directory(self, parent_fd: int, entry: str, name: str) -> None:
        """Walk the directory `entry` of `parent_fd`, whose artifact names start with `name`."""
        shown = name.rstrip("/") or WHOLE_DIRECTORY
        if len(name) > MAX_KEY_LENGTH:
            self.skip(shown, f"invalid name: longer than {MAX_KEY_LENGTH} characters")
            return
        try:
            descriptor = os.open(entry, _DIRECTORY_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            return
        except OSError as error:
            self.skip(shown, _open_failure(error, parent_fd, entry, "not a directory"))
            return
        try:
            for child in self._entries(descriptor, shown):
                self.entry(descriptor, child, name + child)
        finally:
            os.close(descriptor)

    def _entries(self, descriptor: int, shown: str) -> list[str]:
        """The names in a directory, sorted, as many as the walk may still examine."""
        names = []
        with os.scandir(descriptor) as entries:
            for entry in entries:
                if self.entries_left <= 0:
                    if not self.cut_short:
                        self.cut_short = True
                        self.skip(shown, "too many entries: the rest were not examined")
                    break
                self.entries_left -= 1
                names.append(entry.name)
        return sorted(names)

    def entry(self, parent_fd: int, entry: str, name: str) -> None:
        try:
            mode = os.stat(entry, dir_fd=parent_fd, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return
        except OSError as error:
            self.skip(name, f"unreadable: {error.strerror}")
            return
        if stat.S_ISDIR(mode):
            self.directory(parent_fd, entry, name + "/")
        elif stat.S_ISLNK(mode):
            self.skip(name, "symbolic link")
        elif not stat.S_ISREG(mode):
            self.skip(name, "not a regular file")
        else:
            self.file(parent_fd, entry, name)

    def file(self, parent_fd: int, entry: str, name: str) -> None:
        key = artifact_key(self.location, name)
        try:
            validate_key(name, "artifact name")
            validate_key(key, "artifact key")
        except InvalidKey as error:
            self.skip(name, f"invalid name: {error}")
            return
        if len(self.found.stored) >= self.limits.count:
            self.skip(name, "too many artifacts")
            raise _WalkEnded
        try:
            descriptor = os.open(entry, _FILE_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            return
        except OSError as error:
            self.skip(name, _open_failure(error, parent_fd, entry, "not a regular file"))
            return
        try:
            self._store(descriptor, name, key)
        finally:
            os.close(descriptor)

    def _store(self, descriptor: int, name: str, key: str) -> None:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            self.skip(name, "not a regular file")
            return
        size = status.st_size
        if size > self.limits.file_bytes:
            self.skip(name, f"over the per-file limit ({size} bytes > {self.limits.file_bytes})")
            return
        if self.found.total_bytes + size > self.limits.total_bytes:
            self.skip(name, "over the job's total limit")
            return
        source = BoundedFile(descriptor, size)
        try:
            content_type = mimetypes.guess_type(name)[0] or _sniff(source.head(SNIFF_BYTES), size)
            self.store.put_file(key, source, size, content_type)
        except ArtifactUnreadable as error:
            self.skip(name, f"unreadable: {error.strerror}")
            return
        stored = source.high_water
        self.found.total_bytes += stored
        self.found.stored.append({"name": name, "key": key, "url": self.store.url(key),
                                  "content_type": content_type, "size": stored})


class BoundedFile(io.RawIOBase):
    """A file descriptor read as a seekable stream that ends at `limit` bytes, however large the file has
    grown; it does not own the descriptor. `high_water` is the furthest offset any read reached."""

    def __init__(self, descriptor: int, limit: int) -> None:
        super().__init__()
        self.descriptor = descriptor
        self.limit = limit
        self.position = 0
        self.high_water = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        wanted = min(len(buffer), self.limit - self.position)
        if wanted <= 0:
            return 0
        data = self._pread(wanted, self.position)
        buffer[:len(data)] = data
        self.position += len(data)
        self.high_water = max(self.high_water, self.position)
        return len(data)

    def head(self, size: int) -> bytes:
        """The first `size` bytes (fewer for a shorter file), leaving the position where it was."""
        return self._pread(min(size, self.limit), 0)

    def _pread(self, size: int, offset: int) -> bytes:
        try:
            return os.pread(self.descriptor, size, offset)
        except OSError as error:
            raise ArtifactUnreadable(error.errno, error.strerror) from None

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.position, os.SEEK_END: self.limit}[whence]
        self.position = min(max(base + offset, 0), self.limit)
        return self.position

    def tell(self) -> int:
        return self.position


def _open_failure(error: OSError, parent_fd: int, entry: str, wrong_kind: str) -> str:
    """Why an entry could not be opened as a directory or regular file: it is (by now) a link or another kind."""
    if error.errno not in (errno.ELOOP, errno.ENOTDIR, errno.ENXIO):
        return f"unreadable: {error.strerror}"
    try:
        is_link = stat.S_ISLNK(os.stat(entry, dir_fd=parent_fd, follow_symlinks=False).st_mode)
    except OSError:
        is_link = error.errno == errno.ELOOP
    return "symbolic link" if is_link else wrong_kind


def _sniff(head: bytes, size: int) -> str:
    """Text or bytes, judged by the first few KB only; a character cut at the end of them does not count."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) >= size)
    except UnicodeDecodeError:
        return "application/octet-stream"
    return "text/plain; charset=utf-8"
