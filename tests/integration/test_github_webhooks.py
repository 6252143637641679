"""GitHub push webhooks against a real responder: signed and mis-signed deliveries, redelivery, .deferred_server."""

import json
import urllib.parse
import uuid
from pathlib import Path

import pytest

from git_projects import GitProject
from server_responder.projects.github import sign

SECRET = "github-webhook-secret"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def project(tmp_path: Path) -> GitProject:
    return GitProject(tmp_path)


def push_payload(sha: str, project: str = "acme/widget", **changes) -> dict:
    owner, name = project.split("/")
    payload = {"ref": "refs/heads/main", "before": "0" * 39 + "1", "after": sha, "compare": "https://example/c",
               "repository": {"full_name": project, "name": name, "owner": {"login": owner, "name": owner}},
               "pusher": {"name": "pat"}, "head_commit": {"id": sha, "message": "a change", "author": {"name": "Pat"}}}
    payload.update(changes)
    return payload


def deliver(responder, payload: dict, *, event: str = "push", delivery: str | None = None, secret: str = SECRET,
            form: bool = False, signature: str | None = None):
    text = json.dumps(payload)
    body = urllib.parse.urlencode({"payload": text}).encode() if form else text.encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded" if form else "application/json",
               "X-GitHub-Event": event, "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
               "X-Hub-Signature-256": signature if signature is not None else sign(secret, body)}
    if signature == "":
        del headers["X-Hub-Signature-256"]
    return responder.request("POST", "/github", data=body, headers=headers, token=False)


def jobs_of(responder) -> list:
    return responder.request("GET", "/jobs").json()["jobs"]


def test_route_is_absent_without_a_secret(responder):
    answer = deliver(responder, {"zen": "hi"}, event="ping")
    assert answer.status == 404


def test_ping_is_answered(make_responder):
    responder = make_responder(github_secret=SECRET)
    answer = deliver(responder, {"zen": "Design for failure.", "hook_id": 7}, event="ping")
    assert answer.status == 200 and answer.json() == {"pong": True, "zen": "Design for failure.", "hook_id": 7}


def test_signed_push_runs_deferred_server_at_the_pushed_commit(make_responder, project):
    sha = project.commit({".deferred_server": "sleep 1; cat version; git rev-parse HEAD\n", "version": "2.0\n"})
    project.commit({"version": "3.0\n"})
    responder = make_responder(github_secret=SECRET, repo_base_url=project.base_url)
    answer = deliver(responder, push_payload(sha))
    assert answer.status == 202, answer.body
    accepted = answer.json()
    # Answered before the job ran: the command sleeps, the answer does not wait for it.
    assert accepted["status"] in ("queued", "running") and accepted["redelivery"] is False
    assert answer.headers["Location"] == f"/jobs/{accepted['id']}"
    job = responder.wait_for(accepted["id"])
    assert job["status"] == "succeeded", job
    assert job["stdout"] == f"2.0\n{sha}\n"
    at_commit = responder.request("GET", f"/results/acme/widget/{sha}").json()
    assert at_commit["results"] == f"2.0\n{sha}\n" and at_commit["cmd_run"].startswith("sleep 1; cat version")
    index = responder.request("GET", "/results/acme/widget").json()
    assert index[sha]["uri"] == f"/results/acme/widget/{sha}"
    assert index[sha]["push"]["pusher"] == "pat" and index[sha]["push"]["ref"] == "refs/heads/main"


def test_form_encoded_delivery_is_accepted(make_responder, project):
    sha = project.commit({".deferred_server": "echo from form\n"})
    responder = make_responder(github_secret=SECRET, repo_base_url=project.base_url)
    answer = deliver(responder, push_payload(sha), form=True)
    assert answer.status == 202, answer.body
    assert responder.wait_for(answer.json()["id"])["stdout"] == "from form\n"


def test_toml_deferred_server_with_setup_env_and_timeout(make_responder, project):
    config = ('setup = "echo installing > installed"\ncommand = "cat installed; echo $MODE"\ntimeout = 30\n'
              '[env]\nMODE = "ci"\n')
    sha = project.commit({".deferred_server": config})
    responder = make_responder(github_secret=SECRET, repo_base_url=project.base_url)
    job = responder.wait_for(deliver(responder, push_payload(sha)).json()["id"])
    assert job["status"] == "succeeded", job
    assert job["stdout"] == "installing\nci\n"
    assert job["details"]["setup"]["exit_status"] == 0


def test_without_deferred_server_the_default_command_runs(make_responder, project):
    sha = project.commit({"README": "x"})
    responder = make_responder(github_secret=SECRET, repo_base_url=project.base_url,
                               default_command="echo default ran")
    job = responder.wait_for(deliver(responder, push_payload(sha)).json()["id"])
    assert job["stdout"] == "default ran\n" and job["cmd_run"] == "echo default ran"


def test_a_bad_deferred_server_fails_and_says_why_at_the_commit_key(make_responder, project):
    sha = project.commit({".deferred_server": 'command = "x"\ntimeout = "forever"\n'})
    responder = make_responder(github_secret=SECRET, repo_base_url=project.base_url)
    job = responder.wait_for(deliver(responder, push_payload(sha)).json()["id"])
    assert job["status"] == "failed" and "timeout" in job["error"]
    assert "timeout" in responder.request("GET", f"/results/acme/widget/{sha}").json()["error"]


@pytest.mark.parametrize("signature", [
    "", None, "sha256=" + "0" * 64, "sha256=", "sha1=0000000000000000000000000000000000000000",
])
def test_mis_signed_deliveries_are_refused_and_nothing_runs(make_responder, project, tmp_path, signature):
    marker = tmp_path / "marker"
    sha = project.commit({".deferred_server": f"touch {marker}\n"})
    responder = make_responder(github_secret=SECRET, repo_base_url=project.base_url)
    # None: signed, but with another secret; "": no signature header at all.
    answer = deliver(responder, push_payload(sha), signature=signature, secret="wrong-secret")
    assert answer.status == 401 and answer.json()["error"] == "unauthorized"
    assert jobs_of(responder) == []
    assert not marker.exists()
    # Signed with the right secret, the same delivery runs: the marker would have shown a mis-signed run.
    accepted = deliver(responder, push_payload(sha))
    assert responder.wait_for(accepted.json()["id"])["status"] == "succeeded"
    assert marker.exists()


def test_a_body_changed_after_signing_is_refused(make_responder, project):
    sha = project.commit({"README": "x"})
    responder = make_responder(github_secret=SECRET, repo_base_url=project.base_url)
    signed_for = json.dumps(push_payload(sha)).encode()
    tampered = json.dumps(push_payload(sha, repository={"full_name": "acme/other"})).encode()
    answer = responder.request("POST", "/github", data=tampered, token=False, headers={
        "Content-Type": "application/json", "X-GitHub-Event": "push", "X-GitHub-Delivery": "d-1",
        "X-Hub-Signature-256": sign(SECRET, signed_for)})
    assert answer.status == 401 and jobs_of(responder) == []


def test_redelivery_returns_the_first_job_even_after_a_restart(make_responder, project):
    sha = project.commit({".deferred_server": "echo once\n"})
    responder = make_responder(github_secret=SECRET, repo_base_url=project.base_url)
    delivery = str(uuid.uuid4())
    first = deliver(responder, push_payload(sha), delivery=delivery)
    assert first.status == 202
    job_id = first.json()["id"]
    again = deliver(responder, push_payload(sha), delivery=delivery)
    assert again.status == 200 and again.json()["id"] == job_id and again.json()["redelivery"] is True
    responder.wait_for(job_id)
    responder.stop()
    responder.start()
    after_restart = deliver(responder, push_payload(sha), delivery=delivery)
    assert after_restart.status == 200 and after_restart.json()["id"] == job_id
    assert after_restart.json()["status"] == "succeeded"
    assert [job["id"] for job in jobs_of(responder)] == [job_id]
    other = deliver(responder, push_payload(sha))
    assert other.status == 202 and other.json()["id"] != job_id


def test_other_events_and_branch_deletions_are_ignored(make_responder, project):
    sha = project.commit({"README": "x"})
    responder = make_responder(github_secret=SECRET, repo_base_url=project.base_url)
    issue = deliver(responder, {"action": "opened", "issue": {"number": 1}}, event="issues")
    assert issue.status == 202 and issue.json()["ignored"] is True and issue.json()["event"] == "issues"
    deletion = deliver(responder, push_payload("0" * 40, before=sha, deleted=True))
    assert deletion.status == 202 and deletion.json()["ignored"] is True
    assert deletion.json()["detail"] == "branch main was deleted: a deletion has nothing to run"
    tag = deliver(responder, push_payload("0" * 40, before=sha, deleted=True, ref="refs/tags/v1.2"))
    assert tag.status == 202 and tag.json()["ignored"] is True
    assert tag.json()["detail"] == "tag v1.2 was deleted: a deletion has nothing to run"
    assert jobs_of(responder) == []


def test_webhooks_take_bodies_as_large_as_github_sends_under_their_own_limit(make_responder, project):
    sha = project.commit({".deferred_server": "echo big push\n"})
    responder = make_responder(github_secret=SECRET, repo_base_url=project.base_url)
    # A push of many commits: well past max_body_bytes (1 MiB by default), within max_webhook_body_bytes.
    commits = [{"id": f"{n:040x}", "message": "m" * 1000} for n in range(3000)]
    big = push_payload(sha, commits=commits)
    assert len(json.dumps(big)) > 3 * 1024 * 1024
    answer = deliver(responder, big)
    assert answer.status == 202, answer.body
    assert responder.wait_for(answer.json()["id"])["stdout"] == "big push\n"
    # Other routes keep max_body_bytes. The bodies below are refused by their Content-Length before they are
    # read: small enough to be sent whole before the answer comes.
    small = make_responder(github_secret=SECRET, repo_base_url=project.base_url, max_body_bytes=4096,
                           max_webhook_body_bytes=8192)
    other = small.request("POST", "/jobs", data=json.dumps({"script": "#" * 6000}).encode(),
                          headers={"Content-Type": "application/json"})
    assert other.status == 413 and "max_body_bytes (4096 bytes)" in other.json()["detail"]
    between = push_payload(sha, commits=commits[:4])
    assert 4096 < len(json.dumps(between)) < 8192
    assert deliver(small, between).status == 202
    refused = deliver(small, push_payload(sha, commits=commits[:20]))
    assert refused.status == 413, refused.body
    assert "8192 bytes" in refused.json()["detail"] and "max_webhook_body_bytes" in refused.json()["detail"]


@pytest.mark.parametrize(("payload", "field"), [
    ({"after": "a" * 40, "repository": {"full_name": "../../etc"}}, "repository"),
    ({"after": ";rm -rf /", "repository": {"full_name": "acme/widget"}}, "after"),
    ({"after": "a" * 40}, "repository"),
])
def test_signed_but_hostile_pushes_are_400(make_responder, payload, field):
    responder = make_responder(github_secret=SECRET)
    answer = deliver(responder, payload)
    assert answer.status == 400 and answer.json()["field"] == field
    assert jobs_of(responder) == []


def test_missing_event_header_is_400(make_responder):
    responder = make_responder(github_secret=SECRET)
    body = b"{}"
    answer = responder.request("POST", "/github", data=body, token=False, headers={
        "Content-Type": "application/json", "X-Hub-Signature-256": sign(SECRET, body)})
    assert answer.status == 400 and answer.json()["field"] == "X-GitHub-Event"


def test_original_form_with_the_token_runs_a_push(make_responder, project):
    sha = project.commit({".deferred_server": "echo pushed the old way\n"})
    responder = make_responder(repo_base_url=project.base_url)
    answer = responder.request("POST", "/", headers=FORM, token=False, data=urllib.parse.urlencode(
        {"api_token": responder.token, "payload": json.dumps(push_payload(sha))}).encode())
    assert answer.status == 200, answer.body
    assert answer.json()["results"] == "pushed the old way\n"
    assert sha in responder.request("GET", "/results/acme/widget").json()


def test_the_secret_never_reaches_the_log_or_the_job(make_responder, project):
    sha = project.commit({".deferred_server": "env\n"})
    responder = make_responder(github_secret=SECRET, repo_base_url=project.base_url)
    job = responder.wait_for(deliver(responder, push_payload(sha)).json()["id"])
    assert job["status"] == "succeeded" and "PATH=" in job["stdout"]
    assert SECRET not in job["stdout"]
    responder.stop()
    assert SECRET not in responder.log_file.read_text()
