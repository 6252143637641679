"""Completion callbacks delivered to a real receiver on loopback."""

import socket
import time
from pathlib import Path

import pytest

from callback_receiver import CallbackReceiver
from server_responder.http_client import InvalidDestination
from server_responder.jobs.callbacks import CompletionCallbacks, validate_callback_url
from server_responder.jobs.record import Job
from server_responder.results.upload_spool import UploadSpool
from server_responder.settings import Settings


def settings(tmp_path: Path, **values) -> Settings:
    return Settings.from_mapping({"data_dir": str(tmp_path), **values})


def finished_job(job_id: str = "f" * 40, **spec) -> Job:
    job = Job(id=job_id, type="command", spec=spec, results_location="reports/r1", status="succeeded",
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


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def spool(tmp_path: Path, clock: Clock) -> UploadSpool:
    return UploadSpool(tmp_path / "uploads", None, retry_seconds=5, retry_max_seconds=60, clock=clock)


def test_a_failing_receiver_is_retried_from_the_spool_with_backoff(tmp_path: Path):
    clock = Clock()
    uploads = spool(tmp_path, clock)
    with CallbackReceiver(statuses=[503, 500]) as receiver:
        CompletionCallbacks(settings(tmp_path), uploads).job_finished(finished_job(callback_url=receiver.url))
        receiver.wait_for_attempts(1)
        assert uploads.counts()["pending_callbacks"] == 1
        uploads.deliver_due()
        # Not due yet: the first retry comes retry_seconds after the failure.
        assert receiver.attempts == 1
        clock.now += 5
        uploads.deliver_due()
        assert receiver.attempts == 2
        clock.now += 5
        uploads.deliver_due()
        assert receiver.attempts == 2, "the second retry waits twice as long"
        clock.now += 5
        uploads.deliver_due()
        [call] = receiver.wait_for(1)
    assert call["document"]["job_id"] == "f" * 40 and receiver.attempts == 3
    assert uploads.counts() == {"pending_uploads": 0, "failed_uploads": 0, "pending_callbacks": 0,
                                "failed_callbacks": 0}


def test_a_callback_pending_when_the_service_stops_is_delivered_after_the_restart(tmp_path: Path):
    with CallbackReceiver(statuses=[503]) as receiver:
        before = spool(tmp_path, Clock())
        CompletionCallbacks(settings(tmp_path), before).job_finished(finished_job(callback_url=receiver.url))
        receiver.wait_for_attempts(1)
        assert receiver.received == []
        after = spool(tmp_path, Clock())
        assert after.counts()["pending_callbacks"] == 1
        after.deliver_due()
        [call] = receiver.wait_for(1)
    assert call["document"]["job_id"] == "f" * 40 and after.counts()["pending_callbacks"] == 0


def test_every_job_gets_its_own_callback_to_a_shared_url(tmp_path: Path):
    uploads = spool(tmp_path, Clock())
    with CallbackReceiver() as receiver:
        callbacks = CompletionCallbacks(settings(tmp_path, callback_url=receiver.url), uploads)
        for n in range(5):
            callbacks.job_finished(finished_job(f"{n:040d}"))
        calls = receiver.wait_for(5)
    assert sorted(call["document"]["job_id"] for call in calls) == [f"{n:040d}" for n in range(5)]


def test_a_callback_the_receiver_refuses_is_kept_aside_not_retried(tmp_path: Path):
    uploads = spool(tmp_path, Clock())
    with CallbackReceiver(statuses=[410]) as receiver:
        CompletionCallbacks(settings(tmp_path), uploads).job_finished(finished_job(callback_url=receiver.url))
        receiver.wait_for_attempts(1)
        deadline = time.monotonic() + 10
        while uploads.counts()["failed_callbacks"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        uploads.deliver_due()
        assert receiver.attempts == 1
    assert uploads.counts()["failed_callbacks"] == 1 and uploads.counts()["pending_callbacks"] == 0
