"""Jobs' workspaces: `<work_dir>/<job id>` with `artifacts/` and `tmp/`, shared with the job user's group.

A finished job's workspace goes whole, unless nothing of the job can be left running and it is as it was made
but for files at its top: then those files go and the workspace is kept, renamed, for a later job. Two renames
instead of making and removing three directories, each a block to allocate, free and, on a disk mounted with
`discard`, trim.
"""

from __future__ import annotations

import errno
import itertools
import os
import shutil
import subprocess
import threading
from pathlib import Path

from server_responder.jobs.containment import child_setup
from server_responder.jobs.runner import JobUser

KEPT_PREFIX = "kept-"
_SUBDIRECTORIES = ("artifacts", "tmp")


def _signature(path: Path) -> tuple[int, int, int, int, int]:
    """What a job could change of a directory it did not make: which one it is, its owner and its mode."""
    info = os.lstat(path)
    return info.st_dev, info.st_ino, info.st_uid, info.st_gid, info.st_mode


class Workspaces:
    def __init__(self, root: Path, run_as: JobUser | None, kept_max: int) -> None:
        self.root = root
        self.run_as = run_as
        self.kept_max = kept_max
        self._lock = threading.Lock()
        # Workspaces ready for a job, with what their three directories were when made.
        self._kept: list[tuple[Path, tuple]] = []
        # Workspaces in use, by path, with the same.
        self._made: dict[Path, tuple] = {}
        self._names = itertools.count(1)

    def make(self, job_id: str) -> Path:
        workspace = self.root / job_id
        with self._lock:
            kept = self._kept.pop() if self._kept else None
        if kept is not None:
            path, signature = kept
            try:
                os.rename(path, workspace)
            except OSError:
                self.remove(path)
            else:
                with self._lock:
                    self._made[workspace] = signature
                return workspace
        for directory in (workspace, *(workspace / name for name in _SUBDIRECTORIES)):
            try:
                os.mkdir(directory, 0o700)
            except FileExistsError:
                pass
            except FileNotFoundError:
                directory.mkdir(parents=True, mode=0o700)
            if self.run_as:
                # Shared with the job user's group; new files and directories below keep the group (setgid),
                # so the service can read them.
                if directory == workspace:
                    os.chown(directory, -1, self.run_as.gid)
                os.chmod(directory, 0o2770)
        with self._lock:
            self._made[workspace] = self._signatures(workspace)
        return workspace

    def finish(self, workspace: Path, nothing_left_running: bool) -> None:
        """Once the job's answer is out: keep the workspace for another job, or remove it."""
        with self._lock:
            signature = self._made.pop(workspace, None)
            room = len(self._kept) < self.kept_max
        if nothing_left_running and room and signature is not None and self._emptied(workspace, signature):
            kept = self.root / f"{KEPT_PREFIX}{next(self._names)}"
            try:
                os.rename(workspace, kept)
            except OSError:
                pass
            else:
                with self._lock:
                    room = len(self._kept) < self.kept_max  # jobs finishing at once may have filled it
                    if room:
                        self._kept.append((kept, signature))
                if room:
                    return
                workspace = kept
        self.remove(workspace)

    def recover(self, in_use: set[str]) -> None:
        """At start: every workspace but those of the jobs named goes, kept ones too."""
        with self._lock:
            self._kept.clear()
            self._made.clear()
        for entry in self.root.iterdir():
            if entry.is_dir() and not entry.is_symlink() and entry.name not in in_use:
                self.remove(entry)

    def close(self) -> None:
        """At stop: the kept workspaces go."""
        with self._lock:
            kept, self._kept = self._kept, []
        for path, _ in kept:
            self.remove(path)

    def remove(self, workspace: Path) -> None:
        if _remove_plain_workspace(workspace):
            return
        if self.run_as and os.geteuid() != 0:
            # The job may have made files only its own user can remove (root can remove anything).
            subprocess.run(["rm", "-rf", "--", str(workspace)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=False, env={"PATH": "/usr/bin:/bin"},
                           user=self.run_as.uid, group=self.run_as.gid, extra_groups=[],
                           preexec_fn=child_setup(()))
        shutil.rmtree(workspace, ignore_errors=True)

    def _signatures(self, workspace: Path) -> tuple:
        return tuple(_signature(directory) for directory in (workspace, *(workspace / name for name in
                                                                           _SUBDIRECTORIES)))

    def _emptied(self, workspace: Path, signature: tuple) -> bool:
        """The workspace as it was made, its top-level files removed; False (and it is left as it is) when the
        job changed or filled anything else: a directory swapped, a mode, an extended attribute, an entry."""
        directories = (workspace, *(workspace / name for name in _SUBDIRECTORIES))
        try:
            if self._signatures(workspace) != signature:
                return False
            for directory in directories:
                if _attributes(directory):
                    return False
            for directory in directories[1:]:
                with os.scandir(directory) as entries:
                    if next(entries, None) is not None:
                        return False
            files = []
            with os.scandir(workspace) as entries:
                for entry in entries:
                    if entry.name in _SUBDIRECTORIES:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        return False
                    files.append(entry.path)
            for file in files:
                os.unlink(file)
        except OSError:
            return False
        return True


def _attributes(directory: Path) -> list[str]:
    try:
        return os.listxattr(directory, follow_symlinks=False)
    except OSError as error:
        if error.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return []  # a file system without extended attributes
        raise


def _remove_plain_workspace(workspace: Path) -> bool:
    """The usual workspace, files and empty directories at its top, removed in a few calls; False when it is
    anything more, for the thorough removal."""
    try:
        with os.scandir(workspace) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    os.rmdir(entry.path)
                else:
                    os.unlink(entry.path)
        os.rmdir(workspace)
    except OSError:
        return False
    return True
