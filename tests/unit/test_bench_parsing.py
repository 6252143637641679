"""The benchmark's reading of hey's summary, from outputs saved from real runs."""

import importlib.util
import math
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
