"""Project names, revisions, mirrors, history and checkouts against real git repositories."""

import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from git_projects import GitProject, git
from server_responder.projects.git import (
    Git, GitError, InvalidProject, InvalidRevision, Mirrors, parse_commits, validate_project, validate_revision,
)


@pytest.fixture
def project(tmp_path: Path) -> GitProject:
    return GitProject(tmp_path)


@pytest.fixture
def mirrors(tmp_path: Path, project: GitProject) -> Mirrors:
    return Mirrors(tmp_path / "data" / "repos", project.base_url, Git(tmp_path, timeout=60), backoff=0.01)


@pytest.mark.parametrize("name", ["acme/widget", "Ac.me/wid_get-2", "a/b"])
def test_good_project_names(name):
    assert validate_project(name) == name


@pytest.mark.parametrize("name", [
    None, "", "widget", "acme/widget/extra", "../etc", "acme/..", "acme/../passwd", "acme/.git", "-x/widget",
    "acme/widget;touch x", "acme/$(id)", "acme/wid get", "acme/widget\n", "/acme/widget", "acme//widget", 5,
])
def test_hostile_project_names(name):
    with pytest.raises(InvalidProject):
        validate_project(name)


@pytest.mark.parametrize("revision", ["main", "v1.0", "feature/x", "a" * 40, "HEAD", "release-1_2"])
def test_good_revisions(revision):
    assert validate_revision(revision) == revision


@pytest.mark.parametrize("revision", [
    ";rm -rf /", "--upload-pack=touch x", "-n", "main..other", "a b", "$(id)", "main`id`", "/abs", "x/", "x.lock",
    "a//b", "", "main|id", "x" * 201,
])
def test_hostile_revisions(revision):
    with pytest.raises(InvalidRevision):
        validate_revision(revision)


def test_commit_lists_and_history():
    assert parse_commits(None) == ["HEAD"]
    assert parse_commits("history") == ["history"]
    assert parse_commits("a1, b2,c3") == ["a1", "b2", "c3"]
    with pytest.raises(InvalidRevision):
        parse_commits("a1,;rm -rf /")
    with pytest.raises(InvalidRevision):
        parse_commits(",".join(["a"] * 101))


def test_mirror_is_cloned_then_fetched(project: GitProject, mirrors: Mirrors):
    first = project.commit({"a.txt": "1"})
    mirror = mirrors.update(project.project)
    assert mirror == mirrors.path(project.project)
    assert mirrors.resolve(mirror, "HEAD") == first
    second = project.commit({"a.txt": "2"})
    assert mirrors.resolve(mirror, second) is None
    mirrors.update(project.project)
    assert mirrors.resolve(mirror, "HEAD") == second
    assert mirrors.resolve(mirror, "main") == second
    assert mirrors.resolve(mirror, "no-such-branch") is None


def _garbage_head(mirror: Path) -> None:
    (mirror / "HEAD").write_text("garbage\n")


def _corrupt_objects(mirror: Path) -> None:
    for path in (mirror / "objects").rglob("*"):
        if path.is_file():
            path.chmod(0o644)
            path.write_bytes(b"corrupt")


def _wrong_remote(mirror: Path) -> None:
    git("config", "remote.origin.url", "file:///nowhere/else", cwd=mirror)


@pytest.mark.parametrize("damage", [_garbage_head, _corrupt_objects, _wrong_remote])
def test_broken_mirror_is_removed_and_cloned_again(project: GitProject, mirrors: Mirrors, damage):
    sha = project.commit({"a.txt": "1"})
    mirror = mirrors.update(project.project)
    damage(mirror)
    mirrors.update(project.project)
    assert mirrors.resolve(mirror, "HEAD") == sha
    git("fsck", "--no-progress", cwd=mirror)
    assert git("config", "remote.origin.url", cwd=mirror).strip() == mirrors.url(project.project)


def test_unreachable_repository_fails_after_retries_with_a_clear_message(tmp_path: Path, mirrors: Mirrors):
    with pytest.raises(GitError) as failure:
        mirrors.update("acme/missing")
    assert "could not fetch acme/missing" in str(failure.value)
    assert not mirrors.path("acme/missing").exists()


def test_credentials_in_the_base_url_are_not_shown(tmp_path: Path):
    mirrors = Mirrors(tmp_path / "repos", "http://user:hunter2@127.0.0.1:9/", Git(tmp_path, timeout=10),
                      attempts=1)
    with pytest.raises(GitError) as failure:
        mirrors.update("acme/widget")
    assert "hunter2" not in str(failure.value)


def test_history_keeps_the_last_commit_of_each_day_oldest_first(project: GitProject, mirrors: Mirrors):
    now = datetime.now(timezone.utc).replace(hour=12, minute=0, second=0, microsecond=0)
    project.commit({"f": "ancient"}, when=now - timedelta(days=200))
    morning = project.commit({"f": "10 days ago, morning"}, when=now - timedelta(days=10, hours=2))
    evening = project.commit({"f": "10 days ago, evening"}, when=now - timedelta(days=10) + timedelta(hours=3))
    five = project.commit({"f": "5 days ago"}, when=now - timedelta(days=5))
    yesterday = project.commit({"f": "yesterday"}, when=now - timedelta(days=1))
    mirror = mirrors.update(project.project)
    assert mirrors.history(mirror, 90, now=now) == [evening, five, yesterday]
    assert morning not in mirrors.history(mirror, 90, now=now)
    assert mirrors.history(mirror, 7, now=now) == [five, yesterday]
    assert len(mirrors.history(mirror, 365, now=now)) == 4


def test_history_follows_only_the_default_branch(project: GitProject, mirrors: Mirrors):
    now = datetime.now(timezone.utc).replace(hour=12, minute=0, second=0, microsecond=0)
    on_main = project.commit({"f": "main"}, when=now - timedelta(days=3))
    project.commit({"g": "side"}, when=now - timedelta(days=2), branch="side")
    mirror = mirrors.update(project.project)
    assert mirrors.history(mirror, 90, now=now) == [on_main]


def test_files_are_read_from_the_commit_never_through_a_link(project: GitProject, mirrors: Mirrors):
    sha = project.commit({".deferred_server": "make test\n"})
    project.commit({".deferred_server": None})
    linked = project.symlink(".deferred_server", "/etc/passwd")
    mirror = mirrors.update(project.project)
    assert mirrors.read_file(mirror, sha, ".deferred_server").text == "make test\n"
    assert mirrors.read_file(mirror, linked, ".deferred_server") is None
    assert mirrors.read_file(mirror, sha, "Procfile") is None


def test_each_checkout_is_private_and_at_its_commit(tmp_path: Path, project: GitProject, mirrors: Mirrors):
    first = project.commit({"version": "1"})
    second = project.commit({"version": "2"})
    mirror = mirrors.update(project.project)
    one, two = tmp_path / "one", tmp_path / "two"
    mirrors.checkout(mirror, first, one, None)
    mirrors.checkout(mirror, second, two, None)
    assert (one / "version").read_text() == "1" and (two / "version").read_text() == "2"
    (one / "scratch").write_text("mine")
    assert not (two / "scratch").exists()
    assert git("rev-parse", "HEAD", cwd=one).strip() == first
    assert git("status", "--porcelain", "--untracked-files=no", cwd=two) == ""


def test_git_commands_can_be_cancelled(tmp_path: Path):
    cancel = threading.Event()
    cancel.set()
    runner = Git(tmp_path, timeout=60)
    with pytest.raises(GitError, match="cancelled"):
        runner(["-c", "alias.wait=!sleep 30", "wait"], cwd=tmp_path, cancel=cancel)


class FlakyGit(Git):
    """Real git, except that the first `failures` network operations fail as a flaky remote would."""

    def __init__(self, home: Path, failures: int) -> None:
        super().__init__(home, timeout=60)
        self.failures = failures
        self.network_calls = 0

    def __call__(self, args, **options):
        if args[0] in ("clone", "fetch") and "--local" not in args:
            self.network_calls += 1
            if self.network_calls <= self.failures:
                raise GitError(f"git {args[0]} failed: the remote hung up")
        return super().__call__(args, **options)


@pytest.mark.parametrize(("failures", "succeeds"), [(0, True), (2, True), (3, False)])
def test_network_failures_are_retried_up_to_the_attempts(tmp_path: Path, project: GitProject, failures, succeeds):
    sha = project.commit({"a.txt": "1"})
    flaky = FlakyGit(tmp_path, failures)
    mirrors = Mirrors(tmp_path / "repos", project.base_url, flaky, attempts=3, backoff=0.01)
    if succeeds:
        assert mirrors.resolve(mirrors.update(project.project), "HEAD") == sha
    else:
        with pytest.raises(GitError, match="the remote hung up"):
            mirrors.update(project.project)
    assert flaky.network_calls == min(failures + 1, 3)
