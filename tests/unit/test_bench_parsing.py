"""The benchmark's reading of hey's summary (from outputs saved from real runs) and of the journal's deletions."""

import importlib.util
import math
import os
import sys
from pathlib import Path

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("bench_peer", HERE.parent.parent / "benchmarks" / "bench_peer.py")
bench_peer = importlib.util.module_from_spec(_spec)
# Registered before it runs: its dataclasses look their module up while being defined.
sys.modules.setdefault("bench_peer", bench_peer)
_spec.loader.exec_module(bench_peer)


def test_reads_rate_quantiles_and_statuses_of_a_clean_run():
    figures = bench_peer.parse_hey((HERE / "hey_summary_webhook.txt").read_text())
    assert figures.requests_per_s == 1728.4745
    assert math.isclose(figures.p50_ms, 4.2) and math.isclose(figures.p95_ms, 8.3)
    assert figures.statuses == {200: 200} and figures.errors == 0
    assert figures.unexpected(200) == 0


def test_counts_answers_of_another_status_as_unexpected():
    figures = bench_peer.parse_hey((HERE / "hey_summary_unauthorized.txt").read_text())
    assert figures.statuses == {401: 16}
    assert figures.unexpected(200) == 16


def test_a_quantile_hey_leaves_out_for_few_requests_is_not_a_number():
    figures = bench_peer.parse_hey((HERE / "hey_summary_unauthorized.txt").read_text())
    assert math.isclose(figures.p50_ms, 2.2)
    assert math.isnan(figures.p95_ms)


def test_counts_connection_errors():
    figures = bench_peer.parse_hey((HERE / "hey_summary_refused.txt").read_text())
    assert figures.errors == 6 and figures.statuses == {}
    assert figures.unexpected(200) == 6


def test_spread_shows_the_median_and_the_range_over_rounds():
    assert bench_peer.spread([3.0, 1.0, 2.0]) == "2.0 (1.0–3.0)"
    assert bench_peer.spread([5.0]) == "5.0"
    assert bench_peer.ratio([4.0, 6.0], [2.0]) == "×2.50"


def test_the_segment_watch_sees_a_segment_renamed_out_then_unlinked_and_one_unlinked_at_once(tmp_path):
    for name in ("journal.000001", "journal.000002", "journal.000003"):
        (tmp_path / name).write_bytes(b"x")
    watch = bench_peer.SegmentWatch(tmp_path)
    os.rename(tmp_path / "journal.000001", tmp_path / "released.000001")
    (tmp_path / "released.000001").unlink()
    (tmp_path / "journal.000002").unlink()
    (tmp_path / "other").write_bytes(b"")
    (tmp_path / "other").unlink()
    watch.close()
    first, second = watch.deletions()
    # Events read together share a time: each segment's deletion ends when its file is unlinked.
    assert first[0] <= first[1] <= second[0] == second[1]
    assert set(watch.ended) == {"000001", "000002"}  # the rename alone did not end the first one's deletion


def test_the_pause_at_deletions_is_the_longest_gap_overlapping_one_beyond_the_p99_gap_kept_all():
    pruned = bench_peer.PruningRun(deletions=[(10.0, 10.030)])
    # (when answered, gap): one before the widened window, one across its start, one across its end, a long one
    # far after it
    pruned.answers = [(9.990, 0.004), (9.998, 0.008), (10.055, 0.009), (10.061, 0.006), (20.0, 0.500)]
    control = bench_peer.PruningRun()
    for _ in range(100):
        control.gaps[bench_peer.PAST].add(0.004, True)
    pruning = bench_peer.Pruning(pruned, control)
    assert math.isclose(pruning.longest_gap_at_deletions_ms(), 9.0)
    assert math.isclose(pruning.deletion_pause_ms(), 5.0)


def test_without_a_deletion_the_pruning_pause_is_the_p99_gap_beyond_the_one_kept_all():
    pruned, control = bench_peer.PruningRun(), bench_peer.PruningRun()
    for _ in range(100):
        pruned.gaps[bench_peer.PAST].add(0.006, True)
        control.gaps[bench_peer.PAST].add(0.004, True)
    pruning = bench_peer.Pruning(pruned, control)
    assert math.isnan(pruning.longest_gap_at_deletions_ms())
    assert math.isclose(pruning.target_pause_ms(), 2.0)
    pruned.deletions, pruned.answers = [(10.0, 10.0)], [(10.0, 0.010)]
    assert math.isclose(pruning.target_pause_ms(), 6.0)
