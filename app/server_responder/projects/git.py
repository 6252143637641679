"""Project repositories: names and revisions checked, mirror clones in the data dir, one checkout per run."""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from server_responder.jobs.affinity import every_cpu, unpin_this_process
from server_responder.jobs.runner import SAFE_PATH, JobUser

log = logging.getLogger("server_responder.git")

_PROJECT_PART = re.compile(r"[A-Za-z0-9._-]{1,100}")
_REVISION = re.compile(r"[A-Za-z0-9._/-]{1,200}")
_FULL_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
HISTORY = "history"
MAX_COMMITS = 100
FETCH_ATTEMPTS = 3
FETCH_BACKOFF_SECONDS = 1.0
_POLL_SECONDS = 0.2
# Plumbing output (rev-list over months, a config file) is small; this only stops a runaway.
_GIT_OUTPUT_LIMIT = 16 * 1024 * 1024


class InvalidProject(ValueError):
    """A project name that is not `owner/name` in the allowed alphabet."""


class InvalidRevision(ValueError):
    """A commit, ref or list of them that git could mistake for an option or a path trick."""


class GitError(RuntimeError):
    """A git command failed; the message carries what git said."""


def validate_project(project: object) -> str:
    if not isinstance(project, str) or not project:
        raise InvalidProject("is required: owner/name of the repository")
    parts = project.split("/")
    if len(parts) != 2 or not all(_PROJECT_PART.fullmatch(part) for part in parts):
        raise InvalidProject("must be owner/name using only letters, digits and . _ -")
    if ".." in project or any(part.startswith((".", "-")) for part in parts):
        raise InvalidProject("must not contain .. nor parts starting with . or -")
    return project


def validate_revision(revision: object) -> str:
    if not isinstance(revision, str) or not _REVISION.fullmatch(revision):
        raise InvalidRevision("must be a commit sha or ref using only letters, digits and . _ / -")
    if revision.startswith(("-", "/")) or revision.endswith(("/", ".", ".lock")) or ".." in revision \
            or "//" in revision:
        raise InvalidRevision(f"{revision!r} is not a valid commit sha or ref")
    return revision


def parse_commits(value: object) -> list[str]:
    """`history`, one revision, or a comma-separated list of them; `HEAD` when none is given."""
    if value is None:
        return ["HEAD"]
    if not isinstance(value, str) or not value.strip():
        raise InvalidRevision("must be a commit, a comma-separated list of commits, or history")
    if value == HISTORY:
        return [HISTORY]
    revisions = [validate_revision(item.strip()) for item in value.split(",")]
    if len(revisions) > MAX_COMMITS:
        raise InvalidRevision(f"at most {MAX_COMMITS} commits in one job")
    return revisions


def is_full_sha(value: str) -> bool:
    return bool(_FULL_SHA.fullmatch(value))


class KeyedLocks:
    """One lock per key (a project), made on first use."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def __call__(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())


@dataclass(frozen=True)
class TreeFile:
    """A regular file read from a commit, never through the checkout (which could hold a symlink)."""

    name: str
    text: str


class Git:
    """Runs the service's own git commands: scrubbed environment, own process group, bounded, cancellable."""

    def __init__(self, home: Path, timeout: float) -> None:
        self.timeout = timeout
        self.env = {"PATH": SAFE_PATH, "HOME": str(home), "LANG": "C.UTF-8", "GIT_TERMINAL_PROMPT": "0",
                    "GIT_ASKPASS": "/bin/false", "GIT_SSH_COMMAND": "ssh -o BatchMode=yes"}

    def __call__(self, args: Sequence[str], *, cwd: Path | None = None, cancel: threading.Event | None = None,
                 umask: int = -1, timeout: float | None = None) -> str:
        process = subprocess.Popen(
            ["git", *args], cwd=cwd, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True, umask=umask,
            preexec_fn=unpin_this_process if every_cpu() is not None else None,
        )
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            try:
                stdout, stderr = process.communicate(timeout=_POLL_SECONDS)
                break
            except subprocess.TimeoutExpired:
                stopped = cancel is not None and cancel.is_set()
                if stopped or time.monotonic() >= deadline:
                    _kill_group(process)
                    reason = "cancelled" if stopped else "timed out"
                    raise GitError(f"git {args[0]} {reason}") from None
        if len(stdout) > _GIT_OUTPUT_LIMIT:
            raise GitError(f"git {args[0]} printed more than {_GIT_OUTPUT_LIMIT} bytes")
        if process.returncode != 0:
            message = stderr.decode("utf-8", errors="replace").strip() or f"exit status {process.returncode}"
            raise GitError(f"git {args[0]} failed: {message[-2000:]}")
        return stdout.decode("utf-8", errors="replace")


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.communicate()


class Mirrors:
    """Bare mirror clones of projects, kept in the data dir and fetched before every job."""

    def __init__(self, root: Path, base_url: str, git: Git, *, attempts: int = FETCH_ATTEMPTS,
                 backoff: float = FETCH_BACKOFF_SECONDS) -> None:
        self.root = root
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.git = git
        self.attempts = attempts
        self.backoff = backoff
        self.lock = KeyedLocks()

    def url(self, project: str) -> str:
        return self.base_url + validate_project(project)

    def path(self, project: str) -> Path:
        owner, name = validate_project(project).split("/")
        return self.root / owner / f"{name}.git"

    def update(self, project: str, cancel: threading.Event | None = None) -> Path:
        """Fetch the project's mirror (cloning it first), with retries; a broken mirror is cloned afresh.

        The caller holds `self.lock(project)`, so one project's mirror is only ever changed by one job.
        """
        path = self.path(project)
        url = self.url(project)
        error: GitError | None = None
        for attempt in range(1, self.attempts + 1):
            try:
                if not self._usable(path, url):
                    self._clone(path, url, cancel)
                else:
                    self.git(["fetch", "--prune", "--quiet", "origin"], cwd=path, cancel=cancel)
                return path
            except GitError as failure:
                error = failure
                if cancel is not None and cancel.is_set():
                    break
                log.warning("mirror update failed", extra={"event": "git.fetch_failed", "project": project,
                                                            "attempt": attempt, "error": str(failure)})
                # A fetch that fails twice may be a broken mirror: the last attempt clones from nothing.
                if attempt >= self.attempts - 1:
                    self.remove(project)
                if attempt < self.attempts:
                    waited = self.backoff * 2 ** (attempt - 1)
                    if cancel is not None and cancel.wait(waited):
                        break
                    if cancel is None:
                        time.sleep(waited)
        raise GitError(f"could not fetch {project} from {_shown_url(url)}: {error}")

    def remove(self, project: str) -> None:
        shutil.rmtree(self.path(project), ignore_errors=True)

    def _usable(self, path: Path, url: str) -> bool:
        if not (path / "HEAD").is_file():
            return False
        try:
            configured = self.git(["config", "--get", "remote.origin.url"], cwd=path).strip()
            self.git(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"], cwd=path)
        except GitError:
            return False
        return configured == url

    def _clone(self, path: Path, url: str, cancel: threading.Event | None) -> None:
        shutil.rmtree(path, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        partial = path.with_name(path.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        # Object files readable by a job user whatever the service's umask: checkouts hardlink them.
        self.git(["clone", "--mirror", "--quiet", "--config", "core.sharedRepository=0644", "--", url,
                  str(partial)], cancel=cancel)
        os.replace(partial, path)

    def resolve(self, mirror: Path, revision: str) -> str | None:
        """The full sha of a commit or ref, or None when the mirror has no such commit."""
        try:
            return self.git(["rev-parse", "--verify", "--quiet", "--end-of-options", f"{revision}^{{commit}}"],
                            cwd=mirror).strip() or None
        except GitError:
            return None

    def history(self, mirror: Path, days: int, now: datetime | None = None) -> list[str]:
        """The last commit of each day (UTC) of the default branch over `days` days, oldest first."""
        since = (now or datetime.now(timezone.utc)) - timedelta(days=days)
        listing = self.git(["log", "--first-parent", "--format=%H %ct", f"--since={since.isoformat()}", "HEAD",
                            "--"], cwd=mirror)
        newest_by_day: dict[str, str] = {}
        for line in listing.splitlines():
            sha, _, stamp = line.partition(" ")
            day = datetime.fromtimestamp(int(stamp), timezone.utc).date().isoformat()
            newest_by_day.setdefault(day, sha)
        ordered = [newest_by_day[day] for day in sorted(newest_by_day)]
        return list(dict.fromkeys(ordered))

    def read_file(self, mirror: Path, sha: str, name: str, limit: int = 64 * 1024) -> TreeFile | None:
        """A regular file at the top of the commit's tree, or None when there is none (or it is a link)."""
        listing = self.git(["ls-tree", "--end-of-options", sha, "--", name], cwd=mirror).strip()
        if not listing:
            return None
        mode, kind, rest = listing.split(" ", 2)
        blob = rest.split("\t", 1)[0]
        if kind != "blob" or mode not in ("100644", "100755"):
            return None
        size = int(self.git(["cat-file", "-s", blob], cwd=mirror).strip())
        if size > limit:
            raise GitError(f"{name} is larger than {limit} bytes")
        return TreeFile(name, self.git(["cat-file", "blob", blob], cwd=mirror))

    def checkout(self, mirror: Path, sha: str, destination: Path, run_as: JobUser | None,
                 cancel: threading.Event | None = None) -> None:
        """A private clone of the mirror at `sha`; objects are hardlinked, so it is cheap on one filesystem."""
        # Shared with the job user's group (the workspace is setgid to it) when jobs run as another user.
        umask = 0o007 if run_as else -1
        self.git(["clone", "--local", "--no-checkout", "--quiet", "--", str(mirror), str(destination)],
                 cancel=cancel, umask=umask)
        self.git(["-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", sha], cwd=destination,
                 cancel=cancel, umask=umask)


def _shown_url(url: str) -> str:
    """The URL without any credentials an operator put in repo_base_url."""
    scheme, separator, rest = url.partition("://")
    if separator and "@" in rest.split("/", 1)[0]:
        return f"{scheme}://{rest.split('@', 1)[1]}"
    return url
