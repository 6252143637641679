"""The pure parts of queue mode: how many messages to ask for, what a message asks for, when it is done."""

import json

import pytest

from server_responder.fleet.group import Backoff, describe_error
from server_responder.fleet.messages import InvalidMessage, excerpt, job_id_for_message, parse_message, receive_count
from server_responder.fleet.queue import MISSING, PENDING, STORED, receivable, result_state
from server_responder.jobs.record import Job
from server_responder.responder import job_types
from server_responder.settings import Settings


@pytest.fixture
def settings(tmp_path):
    return Settings.from_mapping({"data_dir": str(tmp_path), "max_body_bytes": 2048})


@pytest.mark.parametrize(("workers", "queued", "running", "asked"), [
    (4, 0, 0, 4),
    (4, 1, 2, 1),
    (4, 0, 4, 0),
    (4, 3, 4, 0),  # more than the workers (HTTP jobs): never a negative count
    (32, 0, 0, 10),  # SQS hands out ten at most
    (1, 0, 0, 1),
])
def test_a_box_asks_for_one_message_per_free_worker(workers, queued, running, asked):
    assert receivable(workers, {"queued_jobs": queued, "running_jobs": running}) == asked


def test_a_message_body_is_a_job_request_checked_like_post_jobs(settings):
    request = parse_message(json.dumps({"script": "echo hi", "language": "sh", "env": {"A": "1"},
                                        "results_location": "runs/one"}), settings, job_types(settings))
    assert request.type == "script" and request.results_location == "runs/one"
    assert request.spec["script"] == "echo hi" and request.spec["env"] == {"A": "1"}


@pytest.mark.parametrize(("body", "reason"), [
    ("not json", "body: malformed JSON"),
    ("[1, 2]", "body: must be a JSON object"),
    ('{"script": 5}', "script:"),
    ('{"script": "x", "type": "nope"}', "type: unknown job type 'nope'"),
    ('{"script": "x", "unknown": 1}', "unknown: is not a field"),
    ('{"script": "' + "x" * 3000 + '"}', "the body is larger than max_body_bytes (2048)"),
    ('{"script": "x", "timeout": NaN}', "body: NaN is not a JSON number"),
])
def test_a_message_that_is_no_job_request_says_why(settings, body, reason):
    with pytest.raises(InvalidMessage) as refused:
        parse_message(body, settings, job_types(settings))
    assert str(refused.value).startswith(reason)


def test_the_receive_count_comes_from_the_message_attributes():
    assert receive_count({"Attributes": {"ApproximateReceiveCount": "3"}}) == 3
    assert receive_count({}) == 1
    assert receive_count({"Attributes": {"ApproximateReceiveCount": "many"}}) == 1


def test_an_excerpt_is_short_one_line_and_masks_secrets():
    shown = excerpt("token=s3cret\nline two " + "y" * 100, ["s3cret"])
    assert shown.startswith("token=***\\nline two ") and "s3cret" not in shown
    assert len(shown) < 80 and shown.endswith("…") and "\n" not in shown


def test_a_message_names_its_job_by_its_message_id():
    assert job_id_for_message("abc") == job_id_for_message("abc") != job_id_for_message("abd")
    assert len(job_id_for_message("abc")) == 40


def test_a_result_counts_as_stored_only_once_delivered_and_final():
    job = Job(id="d" * 40, type="script", spec={}, results_location="results/" + "d" * 40, status="succeeded")
    document = {"job_id": job.id, "status": "failed"}
    assert result_state(job, document, spooled=True) == PENDING
    assert result_state(job, document, spooled=False) == STORED
    assert result_state(job, None, spooled=False) == MISSING
    assert result_state(job, {"job_id": "e" * 40, "status": "succeeded"}, spooled=False) == MISSING
    # An earlier run's document, written when its service stopped mid-job, is not this job's result.
    assert result_state(job, {"job_id": job.id, "status": "interrupted"}, spooled=False) == MISSING


def test_a_failing_aws_call_is_tried_again_later_and_later_up_to_a_bound():
    now = [100.0]
    backoff = Backoff(clock=lambda: now[0])
    assert backoff.due()
    delays = [backoff.failed() for _ in range(12)]
    assert delays[:3] == [5.0, 10.0, 20.0] and delays[-1] == 300.0 and not backoff.due()
    now[0] += 300.0
    assert backoff.due()
    backoff.succeeded()
    assert backoff.failed() == 5.0


def test_an_aws_failure_is_described_by_its_code_and_message():
    from botocore.exceptions import ClientError, EndpointConnectionError

    refused = ClientError({"Error": {"Code": "AccessDenied", "Message": "not allowed"}}, "SetInstanceProtection")
    assert describe_error(refused) == "AccessDenied: not allowed"
    assert describe_error(EndpointConnectionError(endpoint_url="http://127.0.0.1:9")).startswith(
        "EndpointConnectionError: ")
