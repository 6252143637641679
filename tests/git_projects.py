"""Real git repositories for project-job tests: a bare "remote" per project and a working copy to commit from."""

from __future__ import annotations

import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path

IDENTITY = {
    "GIT_AUTHOR_NAME": "Test Author", "GIT_AUTHOR_EMAIL": "author@example.invalid",
    "GIT_COMMITTER_NAME": "Test Committer", "GIT_COMMITTER_EMAIL": "committer@example.invalid",
}


def git(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    full_env = {**os.environ, **IDENTITY, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd or Path.cwd()),
                **(env or {})}
    done = subprocess.run(["git", *args], cwd=cwd, env=full_env, capture_output=True, text=True)
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout


class GitProject:
    """`owner/name` served from `<root>/remotes/owner/name.git`, reachable as base_url + project."""

    def __init__(self, root: Path, project: str = "acme/widget") -> None:
        self.project = project
        self.remotes = root / "remotes"
        owner, name = project.split("/")
        self.bare = self.remotes / owner / f"{name}.git"
        self.work = root / "checkouts" / owner / name
        self.bare.parent.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)
        git("init", "--quiet", "--bare", "-b", "main", str(self.bare))
        git("init", "--quiet", "-b", "main", cwd=self.work)
        git("remote", "add", "origin", str(self.bare), cwd=self.work)

    @property
    def base_url(self) -> str:
        return f"file://{self.remotes}/"

    def commit(self, files: dict[str, str | None], message: str = "change", when: datetime | None = None,
               executable: tuple[str, ...] = (), branch: str = "main") -> str:
        """Write (or, for None, delete) files, commit them dated `when`, push; return the new sha."""
        for name, content in files.items():
            path = self.work / name
            if content is None:
                path.unlink(missing_ok=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
            if name in executable:
                path.chmod(0o755)
        env = {}
        if when is not None:
            stamp = when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+0000")
            env = {"GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp}
        git("add", "--all", cwd=self.work)
        git("commit", "--quiet", "--allow-empty", "-m", message, cwd=self.work, env=env)
        git("push", "--quiet", "--force", "origin", f"HEAD:refs/heads/{branch}", cwd=self.work)
        return self.head()

    def symlink(self, name: str, target: str) -> str:
        (self.work / name).symlink_to(target)
        return self.commit({}, f"link {name}")

    def head(self) -> str:
        return git("rev-parse", "HEAD", cwd=self.work).strip()

    def tag(self, name: str) -> None:
        git("tag", name, cwd=self.work)
        git("push", "--quiet", "origin", name, cwd=self.work)
