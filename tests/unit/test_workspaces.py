"""Jobs' workspaces on a real file system: kept for a later job only when nothing of the earlier one is left in
them, removed whole otherwise."""

import os
from pathlib import Path

import pytest

from server_responder.jobs.runner import JobUser
from server_responder.jobs.workspaces import KEPT_PREFIX, Workspaces

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sharing a workspace with the job user's group needs root")


@pytest.fixture
def workspaces(tmp_path: Path) -> Workspaces:
    root = tmp_path / "work"
    root.mkdir(mode=0o711)
    return Workspaces(root, JobUser.named("nobody"), kept_max=2)


def layout(workspace: Path) -> list[str]:
    return sorted(str(path.relative_to(workspace)) for path in workspace.rglob("*"))


def modes(workspace: Path) -> list[tuple[int, int, int]]:
    return [(info.st_uid, info.st_gid, info.st_mode) for info in
            (os.lstat(directory) for directory in (workspace, workspace / "artifacts", workspace / "tmp"))]


def test_a_fresh_workspace_is_shared_with_the_job_users_group(workspaces):
    workspace = workspaces.make("a" * 40)
    assert workspace == workspaces.root / ("a" * 40)
    assert layout(workspace) == ["artifacts", "tmp"]
    nobody = JobUser.named("nobody")
    assert {(uid, gid, oct(mode & 0o7777)) for uid, gid, mode in modes(workspace)} == {(0, nobody.gid, "0o2770")}


def test_a_finished_workspace_with_only_top_level_files_is_emptied_and_given_to_the_next_job(workspaces):
    first = workspaces.make("a" * 40)
    (first / "script.sh").write_text("echo 9")
    (first / "notes.txt").write_text("the first job's")
    os.symlink("/etc/passwd", first / "link")
    made = modes(first)
    inode = first.stat().st_ino
    workspaces.finish(first, nothing_left_running=True)
    assert not first.exists()
    assert [entry.name.startswith(KEPT_PREFIX) for entry in workspaces.root.iterdir()] == [True]
    second = workspaces.make("b" * 40)
    assert second.stat().st_ino == inode
    assert layout(second) == ["artifacts", "tmp"] and modes(second) == made


@pytest.mark.parametrize("leave", [
    "file in artifacts", "file in tmp", "subdirectory", "artifacts swapped for a link", "tmp swapped for a directory",
    "extended attribute", "artifacts removed",
])
def test_a_workspace_the_job_changed_otherwise_is_removed_whole(workspaces, leave):
    workspace = workspaces.make("a" * 40)
    if leave == "file in artifacts":
        (workspace / "artifacts" / "report").write_text("x")
    elif leave == "file in tmp":
        (workspace / "tmp" / "cache").write_text("x")
    elif leave == "subdirectory":
        (workspace / "build").mkdir()
    elif leave == "artifacts swapped for a link":
        (workspace / "artifacts").rmdir()
        os.symlink("/etc", workspace / "artifacts")
    elif leave == "tmp swapped for a directory":
        (workspace / "tmp").rmdir()
        (workspace / "tmp").mkdir(mode=0o2770)
    elif leave == "extended attribute":
        os.setxattr(workspace / "tmp", "user.left", b"by the job")
    elif leave == "artifacts removed":
        (workspace / "artifacts").rmdir()
    workspaces.finish(workspace, nothing_left_running=True)
    assert list(workspaces.root.iterdir()) == []
    fresh = workspaces.make("b" * 40)
    assert layout(fresh) == ["artifacts", "tmp"] and not (fresh / "artifacts").is_symlink()
    assert os.listxattr(fresh / "tmp") == []


def test_a_workspace_is_never_kept_while_something_of_its_job_may_run(workspaces):
    workspace = workspaces.make("a" * 40)
    workspaces.finish(workspace, nothing_left_running=False)
    assert list(workspaces.root.iterdir()) == []


def test_at_most_kept_max_are_kept_and_stop_removes_them(workspaces):
    made = [workspaces.make(name * 40) for name in "abc"]
    for workspace in made:
        workspaces.finish(workspace, nothing_left_running=True)
    assert len(list(workspaces.root.iterdir())) == workspaces.kept_max
    workspaces.close()
    assert list(workspaces.root.iterdir()) == []


def test_recovery_removes_kept_and_leftover_workspaces_but_not_those_of_queued_jobs(workspaces):
    kept = workspaces.make("a" * 40)
    workspaces.finish(kept, nothing_left_running=True)
    queued = workspaces.make("b" * 40)
    leftover = workspaces.make("c" * 40)
    (leftover / "artifacts" / "partial").write_text("x")
    workspaces.recover({"b" * 40})
    assert list(workspaces.root.iterdir()) == [queued]
    fresh = workspaces.make("d" * 40)
    assert sorted(workspaces.root.iterdir()) == [queued, fresh] and layout(fresh) == ["artifacts", "tmp"]
