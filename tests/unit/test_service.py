"""The job service without any web server: plain objects, real processes."""

import errno
import json
import os
import threading
import time
from pathlib import Path

import pytest

from server_responder.jobs.journal import JobJournal
from server_responder.jobs.record import INTERRUPTED, QUEUED, RUNNING, Job
from server_responder.jobs.service import DataDirUnwritable, JobExists, NotAccepting, QueueFull
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
    # What an earlier run left in the journal.
    spool = JobJournal(tmp_path / "data" / "jobs")
    spool.open()
    running = Job(id="a" * 40, type="script", spec=script("print(1)"), results_location="r/running", status=RUNNING)
    queued = Job(id="b" * 40, type="script", spec=script("print('queued ran')"), results_location="r/queued",
                 status=QUEUED)
    spool.save(running)
    spool.save(queued)
    spool.close()
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


def test_past_the_retention_time_the_journal_keeps_the_retained_number_of_jobs(tmp_path):
    responder = make(tmp_path, jobs_retained=3, jobs_retained_minutes=0)
    responder.start()
    try:
        ids = [responder.jobs.submit("script", script(f"print({n})")).id for n in range(8)]
        for job_id in ids:
            responder.jobs.wait(job_id, 10)
        listed = [job.id for job in responder.jobs.recent(10)]
    finally:
        responder.stop()
    # What a restart finds is what was kept.
    journal = JobJournal(tmp_path / "data" / "jobs")
    journal.open()
    assert journal.count() == 3 and all(journal.load(job_id) for job_id in ids[-3:])
    assert listed == ids[-3:][::-1]


def test_within_the_retention_time_every_finished_job_stays_readable(tmp_path):
    responder = make(tmp_path, jobs_retained=2, jobs_retained_minutes=15)
    responder.start()
    try:
        ids = [responder.jobs.submit("script", script("pass")).id for _ in range(6)]
        for job_id in ids:
            responder.jobs.wait(job_id, 10)
        assert all(responder.jobs.get(job_id).status == "succeeded" for job_id in ids)
    finally:
        responder.stop()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def finished(job_id: str) -> Job:
    return Job(id=job_id, type="script", spec={}, results_location=f"r/{job_id}", status="succeeded",
               finished_at="2024-01-01T00:00:00.000Z")


def test_the_journal_prunes_in_the_order_jobs_finished_keeping_the_recent_and_the_floor(tmp_path):
    clock = Clock()
    journal = JobJournal(tmp_path / "jobs", now=clock)
    journal.open()
    for n in range(6):
        journal.save(finished(f"{n:040d}"))
        clock.now += 60
    journal.save(Job(id="q" * 40, type="script", spec={}, results_location="r/q"))
    # Finished 6, 5, 4, 3, 2 and 1 minutes ago: with 3.5 minutes kept, the three older ones go.
    assert journal.prune(keep=1, keep_seconds=210) == 3
    assert [journal.load(f"{n:040d}") is not None for n in range(6)] == [False] * 3 + [True] * 3
    clock.now += 3600
    # Past the time only the floor stays, and the queued record was never a candidate.
    assert journal.prune(keep=2, keep_seconds=210) == 1
    assert journal.recently_finished(10) == [f"{n:040d}" for n in (5, 4)]
    assert journal.load("q" * 40).status == QUEUED
    journal.close()
    # A restart finds the same: removals are in the journal too.
    again = JobJournal(tmp_path / "jobs", now=clock)
    assert [job.id for job in again.open()] == ["q" * 40]
    assert again.recently_finished(10) == [f"{n:040d}" for n in (5, 4)] and again.count() == 3


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


class FailingStore:
    """The configured store, failing its writes while `full` is set, as a full disk does."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.full = True

    def put(self, key, body, content_type):
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.inner.put(key, body, content_type)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_job_whose_result_cannot_be_stored_is_failed_released_and_reported(tmp_path):
    responder = make(tmp_path, workers=2)
    store = responder.jobs.store = FailingStore(responder.store)
    responder.start()
    try:
        jobs = [responder.jobs.submit("script", script("print(1)")) for _ in range(6)]
        done = [responder.jobs.wait(job.id, 10) for job in jobs]
        assert {job.status for job in done} == {"failed"}
        assert all(job.error.startswith("result not stored: the result store") and "is full" in job.error
                   and job.finished_at for job in done)
        assert responder.jobs.counts() == {"queued_jobs": 0, "running_jobs": 0}
        assert any("is full" in reason for reason in responder.jobs.degradations.reasons())
        store.full = False
        job = responder.jobs.wait(responder.jobs.submit("script", script("print(2)")).id, 10)
        assert job.status == "succeeded" and get_json(responder.store, job.results_location)["status"] == "succeeded"
        assert responder.jobs.degradations.reasons() == []
    finally:
        responder.stop()


def test_a_final_record_the_journal_cannot_take_is_served_from_memory_and_says_so(tmp_path):
    responder = make(tmp_path)
    spool = responder.jobs.journal
    save = spool.save

    def save_unless_finished(job, durable=False):
        if job.finished:
            raise OSError(errno.EROFS, "Read-only file system")
        save(job, durable)

    spool.save = save_unless_finished
    responder.start()
    try:
        job = responder.jobs.submit("script", script("print(1)"))
        done = responder.jobs.wait(job.id, 10)
        assert done.status == "succeeded" and done.finished_at
        assert "is read-only" in done.details["record_not_saved"]
        assert responder.jobs.get(job.id) is done
        assert responder.jobs.counts()["running_jobs"] == 0
        # The stale running record is gone: a restart neither runs the job again nor calls it interrupted.
        assert spool.load(job.id) is None
    finally:
        responder.stop()


def test_a_failing_idle_clock_and_listener_do_not_keep_a_job_active(tmp_path):
    responder = make(tmp_path)
    responder.jobs.on_finished(lambda job: 1 / 0)

    def clock_fails():
        raise OSError(errno.ENOSPC, "No space left on device")

    responder.clock.job_finished = clock_fails
    responder.start()
    try:
        job = responder.jobs.submit("script", script("print(1)"))
        assert responder.jobs.wait(job.id, 10).status == "succeeded"
        assert responder.jobs.counts() == {"queued_jobs": 0, "running_jobs": 0}
        responder.drain.drain("test")
        responder.drain.wait_until_drained(10)
        assert responder.idle_status().drained
    finally:
        responder.stop()


def test_a_job_the_journal_cannot_take_is_refused_and_left_nowhere(tmp_path):
    responder = make(tmp_path)
    spool = responder.jobs.journal

    def full(job, durable=False):
        raise OSError(errno.ENOSPC, "No space left on device", str(spool.directory / ".tmp-x"))

    spool.save = full
    responder.start()
    try:
        with pytest.raises(DataDirUnwritable, match=r"the data dir .* is full \(No space left on device\)"):
            responder.jobs.submit("script", script("print(1)"))
        assert responder.jobs.counts() == {"queued_jobs": 0, "running_jobs": 0}
        assert responder.jobs.recent() == []
    finally:
        responder.stop()


def test_a_cancelled_queued_job_is_never_seen_final_before_its_result_is_stored(tmp_path):
    responder = make(tmp_path)
    seen = []
    store = responder.jobs.store
    put = store.put
    storing, release = threading.Event(), threading.Event()

    def slow_put(key, body, content_type):
        if b'"cancelled"' in body:
            # While the cancelled result is being stored, the job is still what it was.
            seen.append(responder.jobs.get(waiting.id).status)
            storing.set()
            release.wait(10)
        put(key, body, content_type)

    store.put = slow_put
    responder.start()
    try:
        blocker = responder.jobs.submit("script", script("import time; time.sleep(1)"))
        waiting = responder.jobs.submit("script", script("print('never')"))
        canceller = threading.Thread(target=responder.jobs.cancel, args=(waiting.id,))
        canceller.start()
        assert storing.wait(10)
        assert responder.jobs.cancel(waiting.id).status == QUEUED
        release.set()
        canceller.join(10)
        cancelled = responder.jobs.get(waiting.id)
        assert seen == [QUEUED] and cancelled.status == "cancelled" and cancelled.finished_at
        assert get_json(responder.store, waiting.results_location)["status"] == "cancelled"
        assert responder.jobs.wait(blocker.id, 10).status == "succeeded"
    finally:
        release.set()
        responder.stop()


def test_a_jobs_processes_are_gone_before_it_is_final_and_its_cell_is_removed_after(tmp_path):
    responder = make(tmp_path)
    seen: dict[str, object] = {}
    containment = responder.jobs.containment
    make_cell = containment.job

    class Watched:
        """The job's real cell, telling what the job's record said when it was ended and when removed."""

        def __init__(self, cell) -> None:
            self.cell = cell

        def __getattr__(self, name):
            return getattr(self.cell, name)

        def end(self) -> None:
            self.cell.end()
            seen["ended_empty"] = self.cell.empty()
            seen["ended_while"] = responder.jobs.get(self.job_id).status

        def remove(self) -> None:
            seen["removed_while"] = responder.jobs.get(self.job_id).status
            self.cell.remove()

    def job(job_id: str):
        watched = Watched(make_cell(job_id))
        watched.job_id = job_id
        return watched

    containment.job = job
    responder.start()
    try:
        submitted = responder.jobs.submit("script", script("import subprocess; subprocess.Popen(['sleep', '60'])"))
        assert responder.jobs.wait(submitted.id, 10).status == "succeeded"
        deadline = time.monotonic() + 10
        while "removed_while" not in seen:
            assert time.monotonic() < deadline, "the job's cell was never removed"
            time.sleep(0.01)
    finally:
        responder.stop()
    assert seen == {"ended_empty": True, "ended_while": RUNNING, "removed_while": "succeeded"}


def test_a_job_submitted_with_its_own_id_runs_once_at_a_time_and_again_once_finished(tmp_path):
    responder = make(tmp_path)
    responder.start()
    gate = tmp_path / "gate"
    job_id = "c" * 40
    try:
        first = responder.jobs.submit("script", script(f"import os, time\nwhile not os.path.exists({str(gate)!r}): "
                                                       "time.sleep(0.02)\nprint('first')"),
                                      job_id=job_id, details={"receive_count": 1})
        assert first.id == job_id and first.results_location == f"results/{job_id}"
        with pytest.raises(JobExists):
            responder.jobs.submit("script", script("print('twice at once')"), job_id=job_id)
        gate.touch()
        assert responder.jobs.wait(job_id, 10).stdout == "first\n"
        assert get_json(responder.store, first.results_location)["receive_count"] == 1
        again = responder.jobs.submit("script", script("print('again')"), job_id=job_id, details={"receive_count": 2})
        assert responder.jobs.wait(again.id, 10).stdout == "again\n"
        assert get_json(responder.store, first.results_location)["receive_count"] == 2
        with pytest.raises(ValueError, match="40 lowercase hex"):
            responder.jobs.submit("script", script("print(1)"), job_id="../escape")
    finally:
        responder.stop()


def test_a_waited_job_is_synced_once_with_its_end_or_else_before_its_caller_is_answered(tmp_path, monkeypatch):
    responder = make(tmp_path)
    responder.start()
    journal = responder.jobs.journal
    events: list[str] = []
    save, fdatasync = journal.save, os.fdatasync
    monkeypatch.setattr(journal, "save", lambda job, durable=False: (events.append(f"{job.status} saved"),
                                                                     save(job, durable))[1])
    monkeypatch.setattr(os, "fdatasync", lambda descriptor: (events.append("synced"), fdatasync(descriptor))[1])
    gate = tmp_path / "gate"
    try:
        # Answered only once final: the accepted record is synced with the final one.
        done = responder.jobs.submit_and_wait("script", script("print(9)"), None, None, 10)
        assert done.status == "succeeded" and done.stdout == "9\n"
        assert events == ["queued saved", "running saved", "succeeded saved", "synced"]
        # Submitted and waited for apart, as a caller told at once of its job: two syncs.
        events.clear()
        apart = responder.jobs.submit("script", script("print(9)"))
        assert responder.jobs.wait(apart.id, 10).status == "succeeded"
        assert events == ["queued saved", "synced", "running saved", "succeeded saved", "synced"]
        # Not final by the deadline: its caller is told of it (202), so it is on disk first.
        events.clear()
        gated = script(f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.01)")
        pending = responder.jobs.submit_and_wait("script", gated, None, None, 0.3)
        assert not pending.finished
        assert events[0] == "queued saved" and events[-1] == "synced"
        gate.touch()
        assert responder.jobs.wait(pending.id, 10).status == "succeeded"
    finally:
        gate.touch()
        responder.stop()


def test_a_waited_job_that_cannot_be_synced_by_its_deadline_is_refused_to_its_caller_but_runs(tmp_path, monkeypatch):
    responder = make(tmp_path)
    responder.start()
    gate = tmp_path / "gate"
    fdatasync = os.fdatasync

    def failing(descriptor: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    try:
        monkeypatch.setattr(os, "fdatasync", failing)
        gated = script(f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.01)\nprint('ran')")
        with pytest.raises(DataDirUnwritable, match="Input/output error"):
            responder.jobs.submit_and_wait("script", gated, "r/unsynced", None, 0.3)
        monkeypatch.setattr(os, "fdatasync", fdatasync)
        gate.touch()
        deadline = time.monotonic() + 10
        while (get_json(responder.store, "r/unsynced") or {}).get("status") != "succeeded":
            assert time.monotonic() < deadline, "the job never finished"
            time.sleep(0.02)
    finally:
        gate.touch()
        responder.stop()
