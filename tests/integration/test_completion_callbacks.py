"""Completion callbacks from a real responder to a real receiver on loopback."""

import socket
import time
from pathlib import Path

import pytest

from callback_receiver import CallbackReceiver
from git_projects import GitProject


@pytest.fixture
def project(tmp_path: Path) -> GitProject:
    return GitProject(tmp_path)


def test_a_project_job_calls_back_with_where_its_results_are(make_responder, project):
    sha = project.commit({"README": "x"})
    responder = make_responder(repo_base_url=project.base_url)
    with CallbackReceiver() as receiver:
        answer = responder.request("POST", "/jobs?wait=30", body={
            "type": "command", "project": "acme/widget", "command": "exit 4", "results_location": "cb/one",
            "callback_url": receiver.url})
        job = answer.json()
        [call] = receiver.wait_for(1)
    assert call["document"] == {"job_id": job["id"], "status": "failed", "exit_status": 4,
                                "project_key": "acme/widget", "commit_key": f"acme/widget/{sha}",
                                "results_location": "cb/one", "commit_keys": [f"acme/widget/{sha}"]}


def test_the_settings_url_is_retried_through_server_errors(make_responder, project):
    project.commit({"README": "x"})
    with CallbackReceiver(statuses=[503, 500]) as receiver:
        responder = make_responder(repo_base_url=project.base_url, callback_url=receiver.url,
                                   upload_retry_seconds=0.2)
        job = responder.request("POST", "/jobs?wait=30", body={"type": "command", "project": "acme/widget",
                                                                "command": "echo ok"}).json()
        [call] = receiver.wait_for(1)
        assert receiver.attempts == 3
    assert call["document"]["job_id"] == job["id"] and call["document"]["status"] == "succeeded"
    responder.stop()
    events = [line for line in responder.log_file.read_text().splitlines() if '"callback.' in line]
    assert sum('"callback.failed"' in line for line in events) == 2
    assert any('"callback.delivered"' in line for line in events)


def test_a_callback_pending_at_a_stop_is_delivered_after_the_restart(make_responder, tmp_path):
    with CallbackReceiver(statuses=[503] * 1000) as receiver:
        responder = make_responder(callback_url=receiver.url, upload_retry_seconds=0.2)
        job = responder.submit("print('done')", language="python")
        assert job["status"] == "succeeded"
        receiver.wait_for_attempts(2)
        assert responder.request("GET", "/health").json()["pending_callbacks"] == 1
        responder.stop()
        assert receiver.received == []
        receiver.answer([503])
        responder.start()
        [call] = receiver.wait_for(1)
        assert call["document"]["job_id"] == job["id"] and call["document"]["status"] == "succeeded"
        deadline = time.monotonic() + 10
        while responder.request("GET", "/health").json()["pending_callbacks"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert responder.request("GET", "/health").json()["pending_callbacks"] == 0


def test_a_dead_receiver_neither_loses_nor_delays_the_result(make_responder, project):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{unused.getsockname()[1]}/done"
    sha = project.commit({"README": "kept\n"})
    responder = make_responder(repo_base_url=project.base_url, callback_url=dead)
    answer = responder.request("POST", "/jobs?wait=30", body={"type": "command", "project": "acme/widget",
                                                               "command": "cat README", "results_location": "cb/kept"})
    assert answer.status == 200 and answer.json()["status"] == "succeeded"
    assert responder.request("GET", "/results/cb/kept").json()["results"] == "kept\n"
    assert responder.request("GET", f"/results/acme/widget/{sha}").json()["results"] == "kept\n"


def test_a_bad_callback_url_is_400(make_responder, project):
    responder = make_responder(repo_base_url=project.base_url)
    answer = responder.request("POST", "/jobs", body={"type": "command", "project": "acme/widget",
                                                       "callback_url": "file:///etc/passwd"})
    assert answer.status == 400 and answer.json()["field"] == "callback_url"
