"""The job service without any web server: plain objects, real processes."""

import json
import time
from pathlib import Path

import pytest

from server_responder.jobs.record import INTERRUPTED, QUEUED, RUNNING, Job
from server_responder.jobs.service import NotAccepting, QueueFull
from server_responder.responder import Responder
from server_responder.results.store import get_json
from server_responder.settings import Settings


def make(tmp_path: Path, **settings) -> Responder:
    values = {"data_dir": str(tmp_path / "data"), "log_dir": str(tmp_path / "logs"), "workers": 1}
    values.update(settings)
    return Responder.create(Settings.from_mapping(values))


def script(source: str) -> dict:
    return {"language": "python", "script": source, "timeout": 30, "env": {}}


def test_a_queued_job_can_be_cancelled_before_it_starts(tmp_path):
    responder = make(tmp_path)
    responder.start()
    try:
        blocker = responder.jobs.submit("script", script("import time; time.sleep(2)"))
        waiting = responder.jobs.submit("script", script("print('never')"))
        cancelled = responder.jobs.cancel(waiting.id)
        assert cancelled.status == "cancelled"
        assert get_json(responder.store, waiting.results_location)["status"] == "cancelled"
        assert responder.jobs.wait(blocker.id, 10).status == "succeeded"
        assert responder.jobs.get(waiting.id).stdout == ""
    finally:
        responder.stop()


def test_recovery_requeues_queued_jobs_and_interrupts_running_ones(tmp_path):
    responder = make(tmp_path)
    spool = responder.jobs.spool
    running = Job(id="a" * 40, type="script", spec=script("print(1)"), results_location="r/running", status=RUNNING)
    queued = Job(id="b" * 40, type="script", spec=script("print('queued ran')"), results_location="r/queued",
                 status=QUEUED)
    spool.save(running)
    spool.save(queued)
    responder.start()
    try:
        assert responder.jobs.wait(queued.id, 10).stdout == "queued ran\n"
        assert responder.jobs.get(running.id).status == INTERRUPTED
        assert get_json(responder.store, "r/running")["status"] == INTERRUPTED
    finally:
        responder.stop()


def test_full_queue_and_stopped_service_refuse_work(tmp_path):
    responder = make(tmp_path, queue_size=1)
    responder.start()
    try:
        first = responder.jobs.submit("script", script("import time; time.sleep(1)"))
        while responder.jobs.get(first.id).status == QUEUED:
            time.sleep(0.01)
        responder.jobs.submit("script", script("print(1)"))
        with pytest.raises(QueueFull):
            responder.jobs.submit("script", script("print(1)"))
        responder.jobs.set_accepting(False)
        with pytest.raises(NotAccepting):
            responder.jobs.submit("script", script("print(1)"))
    finally:
        responder.stop()


def test_spool_keeps_only_the_retained_number_of_finished_jobs(tmp_path):
    responder = make(tmp_path, jobs_retained=3)
    responder.start()
    try:
        ids = [responder.jobs.submit("script", script(f"print({n})")).id for n in range(8)]
        for job_id in ids:
            responder.jobs.wait(job_id, 10)
    finally:
        responder.stop()
    kept = sorted(p.stem for p in (tmp_path / "data" / "jobs").glob("*.json"))
    assert 3 <= len(kept) < 8
    assert ids[-1] in kept


def test_listeners_hear_of_every_finished_job_and_their_faults_are_contained(tmp_path):
    responder = make(tmp_path)
    heard = []
    responder.jobs.on_finished(lambda job: heard.append(job.id))
    responder.jobs.on_finished(lambda job: 1 / 0)
    responder.start()
    try:
        job = responder.jobs.submit("script", script("print(1)"))
        assert responder.jobs.wait(job.id, 10).status == "succeeded"
    finally:
        responder.stop()
    assert heard == [job.id]


def test_last_job_record_is_persisted_as_json(tmp_path):
    responder = make(tmp_path)
    responder.start()
    try:
        responder.jobs.wait(responder.jobs.submit("script", script("print(1)")).id, 10)
    finally:
        responder.stop()
    record = json.loads((tmp_path / "data" / "last_job.json").read_text())
    assert record["last_started"] <= record["last_finished"]
