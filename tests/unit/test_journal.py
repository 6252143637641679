"""The job journal on a real directory: what a restart reads back, torn lines, old segments, group commit."""

import errno
import itertools
import os
import threading

import pytest

from server_responder.jobs import journal as journal_module
from server_responder.jobs.journal import JobJournal
from server_responder.jobs.record import QUEUED, RUNNING, Job


def job(n: int, status: str = "succeeded", **more) -> Job:
    return Job(id=f"{n:040x}", type="script", spec={"script": "echo"}, results_location=f"r/{n}", status=status,
               **more)


def reopened(directory) -> tuple[JobJournal, list[Job]]:
    journal = JobJournal(directory)
    return journal, journal.open()


def segments(directory) -> list[str]:
    return sorted(path.name for path in directory.iterdir() if path.name.startswith("journal."))


def test_a_restart_reads_each_jobs_latest_record_and_returns_the_unfinished_oldest_first(tmp_path):
    journal = JobJournal(tmp_path)
    journal.open()
    journal.save(job(1, QUEUED, created_at="2026-01-01T00:00:02.000Z"), durable=True)
    journal.save(job(2, QUEUED, created_at="2026-01-01T00:00:01.000Z"), durable=True)
    journal.save(job(2, RUNNING, created_at="2026-01-01T00:00:01.000Z"))
    journal.save(job(3, QUEUED), durable=True)
    journal.save(job(3, "failed", error="boom"), durable=True)
    journal.close()
    again, unfinished = reopened(tmp_path)
    assert [(j.id, j.status) for j in unfinished] == [(job(2).id, RUNNING), (job(1).id, QUEUED)]
    assert again.load(job(3).id).error == "boom"
    assert again.recently_finished(5) == [job(3).id]
    # Every start writes to a segment of its own.
    assert segments(tmp_path) == ["journal.000001", "journal.000002"]


def test_a_torn_last_line_and_a_spoiled_one_are_skipped_and_the_rest_read(tmp_path):
    journal = JobJournal(tmp_path)
    journal.open()
    journal.save(job(1), durable=True)
    journal.close()
    with open(tmp_path / "journal.000001", "ab") as handle:
        handle.write(b"F 12.5 " + job(2).id.encode() + b" {not json}\n")
        handle.write(b"garbage line\n")
        handle.write(b"Q 13.0 " + job(3).id.encode() + b' {"id": "')  # the crash came mid-line
    again, unfinished = reopened(tmp_path)
    assert unfinished == []
    assert again.load(job(1).id).status == "succeeded"
    assert again.load(job(2).id) is None and again.load(job(3).id) is None


def test_a_failed_append_leaves_no_part_of_a_line_and_later_ones_stay_readable(tmp_path, monkeypatch):
    journal = JobJournal(tmp_path)
    journal.open()
    journal.save(job(1), durable=True)
    real_write = os.write

    def half_then_full(descriptor, data):
        real_write(descriptor, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal_module.os, "write", half_then_full)
    with pytest.raises(OSError):
        journal.save(job(2), durable=True)
    monkeypatch.setattr(journal_module.os, "write", real_write)
    journal.save(job(3), durable=True)
    journal.close()
    again, _ = reopened(tmp_path)
    assert [again.load(job(n).id) is not None for n in (1, 2, 3)] == [True, False, True]


def test_segments_whose_records_are_gone_are_deleted_and_the_few_current_ones_move_forward(tmp_path, monkeypatch):
    monkeypatch.setattr(journal_module, "SEGMENT_BYTES", 4096)
    clock = iter(range(1000, 2000))
    journal = JobJournal(tmp_path, now=lambda: float(next(clock)))
    journal.open()
    journal.save(job(0, QUEUED), durable=True)  # waits in the oldest segment while the rest churn
    for n in range(1, 200):
        journal.save(job(n), durable=True)
        journal.prune(keep=5, keep_seconds=0)
    assert journal.load(job(0).id).status == QUEUED
    # Bounded by what is kept, not by what was ever written.
    assert len(segments(tmp_path)) <= 3 and journal.count() == 6
    journal.close()
    again, unfinished = reopened(tmp_path)
    assert [j.id for j in unfinished] == [job(0).id]
    assert again.recently_finished(10) == [job(n).id for n in range(199, 194, -1)] and again.count() == 6


def test_a_segment_is_deleted_outside_the_lock_while_reads_appends_and_other_prunes_go_on(tmp_path, monkeypatch):
    monkeypatch.setattr(journal_module, "SEGMENT_BYTES", 4096)
    monkeypatch.setattr(journal_module, "_DISCARD_STEP", 1024)
    clock = itertools.count(1000)  # a second a line: finishing order survives a restart, whatever the real clock
    journal = JobJournal(tmp_path, now=lambda: float(next(clock)))
    journal.open()
    cutting, go_on = threading.Event(), threading.Event()
    real_truncate = os.ftruncate

    def held_truncate(descriptor, length):
        cutting.set()
        go_on.wait(30)
        real_truncate(descriptor, length)

    monkeypatch.setattr(journal_module.os, "ftruncate", held_truncate)

    def churn():
        for n in range(1, 60):
            journal.save(job(n), durable=True)
            journal.prune(keep=2, keep_seconds=0)

    pruner = threading.Thread(target=churn)
    pruner.start()
    try:
        assert cutting.wait(10), "no segment was deleted a step at a time"
        released = sorted(path.name for path in tmp_path.glob("released.*"))
        reads = []

        def meanwhile():
            journal.save(job(500, QUEUED), durable=True)
            reads.append(journal.load(job(500).id).status)
            journal.prune(keep=2, keep_seconds=0)  # leaves the rest to the deletion under way

        other = threading.Thread(target=meanwhile)
        other.start()
        other.join(5)
        assert not other.is_alive(), "the journal waited for a segment's deletion"
        assert reads == [QUEUED]
        assert sorted(path.name for path in tmp_path.glob("released.*")) == released != []
    finally:
        go_on.set()
        pruner.join(10)
    assert not pruner.is_alive()
    assert len(segments(tmp_path)) <= 3
    journal.close()
    again, unfinished = reopened(tmp_path)
    assert [j.id for j in unfinished] == [job(500).id]
    assert again.recently_finished(5) == [job(59).id, job(58).id]


def test_a_segment_cut_short_by_a_crash_while_deleted_is_never_read_again(tmp_path, monkeypatch):
    monkeypatch.setattr(journal_module, "SEGMENT_BYTES", 4096)
    monkeypatch.setattr(journal_module, "_DISCARD_STEP", 1000)
    journal = JobJournal(tmp_path)
    journal.open()
    journal.save(job(0, QUEUED), durable=True)
    real_truncate = os.ftruncate

    def one_step_then_crash(descriptor, length):
        real_truncate(descriptor, length)
        raise OSError(errno.EIO, "the machine went down here")

    monkeypatch.setattr(journal_module.os, "ftruncate", one_step_then_crash)
    with pytest.raises(OSError):
        for n in range(1, 60):
            journal.save(job(n), durable=True)
            journal.prune(keep=3, keep_seconds=0)
    monkeypatch.setattr(journal_module.os, "ftruncate", real_truncate)
    [cut_short] = tmp_path.glob("released.*")
    # Its tail is gone, and with it the removal of one of its own earlier records.
    assert 0 < cut_short.stat().st_size and cut_short.read_bytes()[-1:] != b"\n"
    kept = {job_id: journal.load(job_id).status for job_id in [job(0).id, *journal.recently_finished(10)]}
    journal.close()
    again, unfinished = reopened(tmp_path)
    assert [j.id for j in unfinished] == [job(0).id]
    assert {job_id: again.load(job_id).status for job_id in kept} == kept and again.count() == len(kept)
    assert not cut_short.exists()


def test_concurrent_durable_saves_share_disk_syncs_and_each_returns_on_disk(tmp_path, monkeypatch):
    journal = JobJournal(tmp_path)
    journal.open()
    syncs = []
    real_sync = os.fdatasync
    gate = threading.Event()

    def slow_sync(descriptor):
        syncs.append(descriptor)
        gate.wait(5)  # the first sync is held until every saver has appended
        real_sync(descriptor)

    monkeypatch.setattr(journal_module.os, "fdatasync", slow_sync)
    savers = [threading.Thread(target=journal.save, args=(job(n),), kwargs={"durable": True}) for n in range(16)]
    for saver in savers:
        saver.start()
    for _ in range(500):
        if journal.count() == 16:
            break
        threading.Event().wait(0.01)
    gate.set()
    for saver in savers:
        saver.join(10)
    assert journal.count() == 16
    assert 1 <= len(syncs) <= 3  # the one held, then at most one for the lines appended while it was held


def test_job_files_of_earlier_versions_move_into_the_journal(tmp_path):
    (tmp_path / f"{job(1).id}.json").write_bytes(job(1, QUEUED).to_json())
    (tmp_path / f"{job(2).id}.json").write_bytes(job(2).to_json())
    (tmp_path / "junk.json").write_bytes(b"{")
    journal, unfinished = reopened(tmp_path)
    assert [j.id for j in unfinished] == [job(1).id]
    assert journal.load(job(2).id).status == "succeeded"
    assert [path.name for path in tmp_path.glob("*.json")] == ["junk.json"]
    journal.close()
    assert reopened(tmp_path)[0].load(job(2).id) is not None


def test_opened_again_in_one_process_it_reads_afresh_and_keeps_no_stale_descriptor(tmp_path):
    journal = JobJournal(tmp_path)
    journal.open()
    journal.save(job(1, QUEUED), durable=True)
    assert [j.id for j in journal.open()] == [job(1).id]
    journal.save(job(1), durable=True)
    assert journal.open() == [] and journal.load(job(1).id).status == "succeeded"
    # One descriptor per segment file: those of the earlier opens were closed.
    held = [target for target in (os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                                  if os.path.exists(f"/proc/self/fd/{fd}")) if target.startswith(str(tmp_path))]
    assert sorted(held) == [str(tmp_path / name) for name in segments(tmp_path)]
