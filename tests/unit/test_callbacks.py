"""Completion callbacks delivered to a real receiver on loopback."""

import socket
from pathlib import Path

import pytest

from callback_receiver import CallbackReceiver
from server_responder.http_client import InvalidDestination
from server_responder.jobs.callbacks import CompletionCallbacks, validate_callback_url
from server_responder.jobs.record import Job
from server_responder.settings import Settings


def settings(tmp_path: Path, **values) -> Settings:
    return Settings.from_mapping({"data_dir": str(tmp_path), **values})


def finished_job(**spec) -> Job:
    job = Job(id="f" * 40, type="command", spec=spec, results_location="reports/r1", status="succeeded",
              exit_status=0)
    job.details.update(project_key="acme/widget", commit_key="acme/widget/" + "a" * 40)
    return job


def test_the_document_names_the_job_and_where_its_results_are(tmp_path: Path):
    with CallbackReceiver() as receiver:
        CompletionCallbacks(settings(tmp_path)).job_finished(finished_job(callback_url=receiver.url))
        [call] = receiver.wait_for(1)
    assert call["path"] == "/done" and call["content_type"] == "application/json"
    assert call["document"] == {"job_id": "f" * 40, "status": "succeeded", "exit_status": 0,
                                "project_key": "acme/widget", "commit_key": "acme/widget/" + "a" * 40,
                                "results_location": "reports/r1"}


def test_the_settings_url_is_used_when_the_job_names_none(tmp_path: Path):
    with CallbackReceiver() as receiver:
        CompletionCallbacks(settings(tmp_path, callback_url=receiver.url)).job_finished(finished_job())
        assert receiver.wait_for(1)[0]["document"]["job_id"] == "f" * 40


def test_no_url_means_no_callback(tmp_path: Path):
    with CallbackReceiver() as receiver:
        callbacks = CompletionCallbacks(settings(tmp_path))
        callbacks.job_finished(finished_job())
        assert callbacks.deliver(receiver.url, {"job_id": "x"}) is True
        assert receiver.attempts == 1


def test_server_errors_are_retried_until_accepted(tmp_path: Path):
    with CallbackReceiver(statuses=[500, 503]) as receiver:
        callbacks = CompletionCallbacks(settings(tmp_path), attempts=5, backoff=0.01)
        assert callbacks.deliver(receiver.url, {"job_id": "x"}) is True
        assert receiver.attempts == 3 and len(receiver.received) == 1


def test_a_client_error_is_not_retried(tmp_path: Path):
    with CallbackReceiver(statuses=[404]) as receiver:
        callbacks = CompletionCallbacks(settings(tmp_path), attempts=5, backoff=0.01)
        assert callbacks.deliver(receiver.url, {"job_id": "x"}) is False
        assert receiver.attempts == 1


def test_an_unreachable_receiver_is_given_up_after_the_attempts(tmp_path: Path):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{unused.getsockname()[1]}/done"
    callbacks = CompletionCallbacks(settings(tmp_path), attempts=3, backoff=0.01)
    assert callbacks.deliver(url, {"job_id": "x"}) is False


@pytest.mark.parametrize("url", ["ftp://host/x", "file:///etc/passwd", "http://", "http://host/a b", "javascript:x",
                                 "", 5, "http://h/" + "x" * 3000])
def test_only_http_urls_are_callback_urls(url):
    with pytest.raises(InvalidDestination):
        validate_callback_url(url)
