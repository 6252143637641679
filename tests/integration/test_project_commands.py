"""Command jobs in checkouts of real git repositories, through a real responder process."""

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from server_responder.jobs.workspaces import KEPT_PREFIX

from git_projects import GitProject

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def project(tmp_path: Path) -> GitProject:
    return GitProject(tmp_path)


def run_command(responder, wait: float = 60, **fields):
    answer = responder.request("POST", f"/jobs?wait={wait}", body={"type": "command", **fields})
    assert answer.status in (200, 202), answer.body
    job = answer.json()
    return job if answer.status == 200 else responder.wait_for(job["id"], timeout=wait)


def result(responder, key: str):
    answer = responder.request("GET", f"/results/{key}")
    assert answer.status == 200, (key, answer.body)
    return answer.json()


def test_command_runs_at_the_commit_and_its_result_is_stored_three_ways(make_responder, project):
    first = project.commit({"README": "one\n"}, "first")
    project.commit({"README": "two\n"}, "second")
    responder = make_responder(repo_base_url=project.base_url)
    job = run_command(responder, project="acme/widget", command="cat README; git rev-parse HEAD", commit=first,
                      results_location="reports/first")
    assert job["status"] == "succeeded", job
    assert job["stdout"] == f"one\n{first}\n"
    at_commit = result(responder, f"acme/widget/{first}")
    assert (at_commit["results"], at_commit["exit_status"], at_commit["cmd_run"]) == (
        f"one\n{first}\n", 0, "cat README; git rev-parse HEAD")
    at_location = result(responder, "reports/first")
    assert at_location["results"] == f"one\n{first}\n" and at_location["commit_key"] == f"acme/widget/{first}"
    index = result(responder, "acme/widget")
    assert index == {first: {"uri": f"/results/acme/widget/{first}", "push": None}}
    # The workspace goes once the answer is out and nothing of the job runs; one kept for a later job is empty.
    work = responder.data_dir / "work"
    deadline = time.monotonic() + 10
    while [entry for entry in work.iterdir() if not entry.name.startswith(KEPT_PREFIX)]:
        assert time.monotonic() < deadline, list(work.iterdir())
        time.sleep(0.05)
    assert [sorted(path.name for path in kept.rglob("*")) for kept in work.iterdir()] in ([], [["artifacts", "tmp"]])


def test_default_commit_is_the_default_branch_and_refs_resolve(make_responder, project):
    project.commit({"README": "one\n"})
    project.tag("v1")
    head = project.commit({"README": "two\n"})
    responder = make_responder(repo_base_url=project.base_url)
    assert run_command(responder, project="acme/widget", command="cat README")["stdout"] == "two\n"
    tagged = run_command(responder, project="acme/widget", command="cat README", commit="v1")
    assert tagged["stdout"] == "one\n"
    assert run_command(responder, project="acme/widget", command="cat README", commit=head[:10])["stdout"] == "two\n"


def test_empty_output_says_what_ran_and_failures_keep_their_status(make_responder, project):
    sha = project.commit({"README": "x"})
    responder = make_responder(repo_base_url=project.base_url)
    quiet = run_command(responder, project="acme/widget", command="true")
    assert quiet["output"] == "cmd true completed with no output"
    assert result(responder, f"acme/widget/{sha}")["results"] == "cmd true completed with no output"
    failing = run_command(responder, project="acme/widget", command="echo broken >&2; exit 7")
    assert (failing["status"], failing["exit_status"], failing["stderr"]) == ("failed", 7, "broken\n")


def test_default_command_when_none_is_given(make_responder, project):
    project.commit({"README": "x"})
    responder = make_responder(repo_base_url=project.base_url, default_command="echo default command ran")
    job = run_command(responder, project="acme/widget")
    assert job["stdout"] == "default command ran\n" and job["cmd_run"] == "echo default command ran"


def test_commit_key_answers_202_while_the_job_that_writes_it_runs(make_responder, project):
    sha = project.commit({"README": "x"})
    responder = make_responder(repo_base_url=project.base_url)
    job = responder.request("POST", "/jobs", body={"type": "command", "project": "acme/widget",
                                                    "command": "sleep 3; echo done"}).json()
    seen = set()
    while responder.request("GET", f"/jobs/{job['id']}", token=False).json()["status"] in ("queued", "running"):
        seen.add(responder.request("GET", f"/results/acme/widget/{sha}").status)
        time.sleep(0.05)
    assert 202 in seen
    assert result(responder, f"acme/widget/{sha}")["results"] == "done\n"


def test_unknown_ref_fails_the_job_with_a_clear_message(make_responder, project):
    project.commit({"README": "x"})
    responder = make_responder(repo_base_url=project.base_url)
    job = run_command(responder, project="acme/widget", command="echo ran", commit="no-such-branch")
    assert job["status"] == "failed" and job["stdout"] == ""
    assert job["error"] == "commit 'no-such-branch': no such commit or ref in acme/widget"
    missing = run_command(responder, project="acme/nothing-here", command="echo ran")
    assert missing["status"] == "failed" and "could not fetch acme/nothing-here" in missing["error"]


def test_comma_list_runs_each_commit_with_its_own_location(make_responder, project):
    first = project.commit({"README": "one\n"})
    second = project.commit({"README": "two\n"})
    third = project.commit({"README": "three\n"})
    responder = make_responder(repo_base_url=project.base_url)
    commits = f"{first},{third},main"
    job = run_command(responder, project="acme/widget", command="cat README", commit=commits,
                      results_location=f"churn/acme_{commits}_report")
    assert job["status"] == "succeeded", job
    assert [run["sha"] for run in job["details"]["runs"]] == [first, third]
    assert result(responder, f"churn/acme_{first}_report")["results"] == "one\n"
    assert result(responder, f"churn/acme_{third}_report")["results"] == "three\n"
    assert result(responder, f"acme/widget/{third}")["sha"] == third
    assert set(result(responder, "acme/widget")) == {first, third}
    assert second not in job["output"]
    summary = result(responder, f"results/{job['id']}")
    assert summary["commit_keys"] == [f"acme/widget/{first}", f"acme/widget/{third}"]


def test_history_runs_one_commit_a_day_oldest_first(make_responder, project):
    now = datetime.now(timezone.utc).replace(hour=12, minute=0, second=0, microsecond=0)
    project.commit({"day": "too old"}, when=now - timedelta(days=120))
    project.commit({"day": "20 days ago, early"}, when=now - timedelta(days=20, hours=3))
    late = project.commit({"day": "20 days ago, late"}, when=now - timedelta(days=20) + timedelta(hours=4))
    middle = project.commit({"day": "6 days ago"}, when=now - timedelta(days=6))
    recent = project.commit({"day": "yesterday"}, when=now - timedelta(days=1))
    responder = make_responder(repo_base_url=project.base_url)
    job = run_command(responder, project="acme/widget", command="cat day; echo; git rev-parse HEAD",
                      commit="history", results_location="history/acme_history_churn")
    assert job["status"] == "succeeded", job
    assert [run["sha"] for run in job["details"]["runs"]] == [late, middle, recent]
    for sha, day in ((late, "20 days ago, late"), (middle, "6 days ago"), (recent, "yesterday")):
        assert result(responder, f"history/acme_{sha}_churn")["results"] == f"{day}\n{sha}\n"
    assert set(result(responder, "acme/widget")) == {late, middle, recent}
    shorter = make_responder(repo_base_url=project.base_url, history_days=10)
    assert [run["sha"] for run in run_command(shorter, project="acme/widget", command="true",
                                              commit="history")["details"]["runs"]] == [middle, recent]


def test_concurrent_jobs_on_one_project_never_share_files_nor_lose_index_entries(make_responder, project):
    shas = [project.commit({"README": f"version {n}\n"}) for n in range(6)]
    responder = make_responder(repo_base_url=project.base_url, workers=6)
    # Each job claims its checkout, waits while the others run, then checks nobody else wrote there.
    command = 'test ! -e claimed && echo "$WHO" > claimed && sleep 1 && cat claimed && ls'
    with ThreadPoolExecutor(len(shas) * 2) as pool:
        futures = [pool.submit(run_command, responder, project="acme/widget", command=command, commit=sha,
                               env={"WHO": f"job-{n}"}) for n, sha in enumerate(shas + shas)]
        jobs = [future.result() for future in futures]
    for n, job in enumerate(jobs):
        assert job["status"] == "succeeded", job
        assert job["stdout"] == f"job-{n}\nREADME\nclaimed\n"
    assert set(result(responder, "acme/widget")) == set(shas)


def test_a_broken_mirror_is_cloned_again(make_responder, project):
    project.commit({"README": "one\n"})
    responder = make_responder(repo_base_url=project.base_url)
    assert run_command(responder, project="acme/widget", command="cat README")["status"] == "succeeded"
    mirror = responder.data_dir / "repos" / "acme" / "widget.git"
    (mirror / "HEAD").write_text("not a ref\n")
    shutil.rmtree(mirror / "refs")
    project.commit({"README": "two\n"})
    assert run_command(responder, project="acme/widget", command="cat README")["stdout"] == "two\n"


HOSTILE = [
    ({"project": "../../etc"}, "project"),
    ({"project": "acme/..", "commit": "main"}, "project"),
    ({"project": "acme/widget;touch {marker}"}, "project"),
    ({"project": "acme/$(touch {marker})"}, "project"),
    ({"project": "acme/widget`touch {marker}`"}, "project"),
    ({"commit": ";rm -rf /"}, "commit"),
    ({"commit": ";touch {marker}"}, "commit"),
    ({"commit": "main;touch {marker}"}, "commit"),
    ({"commit": "$(touch {marker})"}, "commit"),
    ({"commit": "--upload-pack=touch {marker}"}, "commit"),
    ({"commit": "main,;touch {marker}"}, "commit"),
    ({"results_location": "../../../tmp/x"}, "results_location"),
]


def test_hostile_fields_are_refused_with_400_and_nothing_runs(make_responder, project, tmp_path):
    project.commit({"README": "x"})
    marker = tmp_path / "marker"
    responder = make_responder(repo_base_url=project.base_url)
    for fields, field in HOSTILE:
        fields = {key: value.format(marker=marker) for key, value in fields.items()}
        body = {"project": "acme/widget", "command": f"touch {marker}", **fields}
        answer = responder.request("POST", "/jobs", body={"type": "command", **body})
        assert (answer.status, answer.json().get("field")) == (400, field), (fields, answer.body)
        payload = json.dumps({key: value for key, value in body.items() if key != "command"})
        legacy = responder.request("POST", "/", headers=FORM, token=False, data=urllib.parse.urlencode(
            {"api_token": responder.token, "payload": payload, "command": body["command"]}).encode())
        assert (legacy.status, legacy.json().get("field")) == (400, field), (fields, legacy.body)
    assert responder.request("GET", "/jobs").json()["jobs"] == []
    assert not (responder.data_dir / "repos").exists()
    assert not marker.exists()
    # The same command with sound fields does run: the marker would have shown any hostile job.
    assert run_command(responder, project="acme/widget", command=f"touch {marker}")["status"] == "succeeded"
    assert marker.exists()


def test_original_form_runs_a_project_command(make_responder, project):
    sha = project.commit({"README": "from the form\n"})
    responder = make_responder(repo_base_url=project.base_url)
    payload = json.dumps({"project": "acme/widget", "commit": sha, "results_location": "form/project"})
    answer = responder.request("POST", "/", headers=FORM, token=False, data=urllib.parse.urlencode(
        {"api_token": responder.token, "payload": payload, "command": "cat README"}).encode())
    assert answer.status == 200, answer.body
    assert answer.json()["results"] == "from the form\n"
    assert result(responder, f"acme/widget/{sha}")["results"] == "from the form\n"


def test_submit_cli_runs_a_command_in_a_project(make_responder, project):
    project.commit({"README": "via the cli\n"})
    responder = make_responder(repo_base_url=project.base_url)
    done = subprocess.run([sys.executable, "-m", "server_responder", "submit", "--url", responder.url,
                           "--project", "acme/widget", "--command", "cat README; exit 3"],
                          env=responder.env, capture_output=True, text=True, timeout=90)
    assert done.returncode == 3, done.stderr
    assert done.stdout == "via the cli\n"


def test_index_lists_the_project_job_types(responder):
    types = {entry["type"]: entry["fields"] for entry in responder.request("GET", "/index", token=False).json()}
    assert {"script", "command", "project_request", "github_push"} <= set(types)
    assert "commit" in types["command"] and "project_request" in types["project_request"]


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_checkout_is_writable_by_the_job_user_and_git_works_there(make_responder, project):
    project.commit({"README": "x\n"})
    # pytest's own temporary directories are private to root; a job user must be able to reach its work dir.
    base = Path(tempfile.mkdtemp(prefix="sr-project-user-"))
    base.chmod(0o711)
    try:
        responder = make_responder(base=base, job_user="nobody", repo_base_url=project.base_url)
        job = run_command(responder, project="acme/widget",
                          command="id -u; echo new > new.txt; echo more >> README; git status --porcelain")
        assert job["status"] == "succeeded", (job["stderr"], job["error"])
        assert job["stdout"] == f"{pwd.getpwnam('nobody').pw_uid}\n M README\n?? new.txt\n"
        responder.stop()
        assert list((base / "data" / "work").iterdir()) == []
    finally:
        shutil.rmtree(base)
