"""Waiting for a queued job's result document: which document is the job's last word, and when to give up."""

from server_responder.fleet.submission import QueuedJob, result_url, wait_for_result
from server_responder.jobs.record import Job
from server_responder.results.local import LocalResultStore
from server_responder.results.store import StoreUnavailable, put_json

JOB_ID = "a" * 40
LOCATION = f"results/{JOB_ID}"


class Clock:
    """Time that passes only when the waiter pauses; each pause may change the store first."""

    def __init__(self, on_pause=None) -> None:
        self.now = 0.0
        self.pauses: list[float] = []
        self.on_pause = on_pause or (lambda count: None)

    def __call__(self) -> float:
        return self.now

    def pause(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds
        self.on_pause(len(self.pauses))


def queued() -> QueuedJob:
    return QueuedJob(JOB_ID, "message-1", "http://queue", "/unused", LOCATION)


def write(store, job_id: str = JOB_ID, **fields) -> None:
    put_json(store, LOCATION, Job(id=job_id, type="script", spec={}, results_location=LOCATION,
                                  **fields).result_document())


def test_the_finished_document_ends_the_wait_and_the_pauses_back_off(tmp_path):
    store = LocalResultStore(tmp_path)
    clock = Clock(lambda count: count == 5 and write(store, status="succeeded", exit_status=0, stdout="done\n"))

    awaited = wait_for_result(store, queued(), 600, clock=clock, pause=clock.pause)

    assert awaited.final and awaited.document["stdout"] == "done\n"
    assert clock.pauses == [0.25, 0.5, 1.0, 2.0, 4.0]


def test_backoff_stops_at_five_seconds_and_at_the_deadline(tmp_path):
    clock = Clock()

    awaited = wait_for_result(LocalResultStore(tmp_path), queued(), 30, clock=clock, pause=clock.pause)

    assert awaited.document is None and not awaited.final
    assert clock.pauses == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0, 2.25]
    assert clock.now == 30


def test_an_interrupted_run_is_waited_past_and_returned_only_at_the_deadline(tmp_path):
    store = LocalResultStore(tmp_path)
    write(store, status="interrupted", error="the service stopped while this job was running")
    clock = Clock()

    awaited = wait_for_result(store, queued(), 10, clock=clock, pause=clock.pause)

    assert not awaited.final and awaited.document["status"] == "interrupted"
    assert clock.now == 10


def test_another_jobs_document_at_the_location_is_not_this_jobs_result(tmp_path):
    store = LocalResultStore(tmp_path)
    write(store, job_id="b" * 40, status="succeeded", exit_status=0)
    clock = Clock(lambda count: count == 2 and write(store, status="failed", exit_status=7))

    awaited = wait_for_result(store, queued(), 60, clock=clock, pause=clock.pause)

    assert awaited.final and awaited.document["exit_status"] == 7 and awaited.document["job_id"] == JOB_ID


def test_an_unavailable_store_is_retried_and_named_at_the_deadline(tmp_path):
    class Unreachable(LocalResultStore):
        def get(self, key):
            raise StoreUnavailable("S3 get of 'results/x' failed: SlowDown")

    clock = Clock()

    awaited = wait_for_result(Unreachable(tmp_path), queued(), 3, clock=clock, pause=clock.pause)

    assert awaited.document is None and "SlowDown" in awaited.problem
    assert len(clock.pauses) > 1


def test_result_url_names_the_object_in_an_s3_store_only():
    assert result_url("s3://bucket/some/prefix/", "results/x") == "s3://bucket/some/prefix/results/x"
    assert result_url("s3://bucket", "results/x") == "s3://bucket/results/x"
    assert result_url("/var/lib/server-responder/results", "results/x") is None
