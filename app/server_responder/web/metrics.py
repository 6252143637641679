"""`GET /metrics`: the responder's counts in the Prometheus text format.

The counts live in plain Python in the services; a collector turns them into metric families at scrape time, so
prometheus_client is imported only once something scrapes (an idle box that nobody scrapes never loads it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from server_responder import __version__
from server_responder.jobs.tally import DURATION_BUCKETS
from server_responder.responder import Responder
from server_responder.web.http import Incoming, Response, Route

PREFIX = "server_responder"
_UPLOAD_KINDS = ("upload", "callback")


class MetricsApi:
    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        self._registry: Any = None

    def routes(self) -> list[Route]:
        who = "no auth" if self.responder.settings.metrics_public else "token"
        return [Route("GET", "/metrics", self.metrics, f"Counts in the Prometheus text format ({who})")]

    def metrics(self, incoming: Incoming) -> Response:
        if not self.responder.settings.metrics_public:
            incoming.require_token()
        from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(self._scraped()), content_type=CONTENT_TYPE_LATEST)

    def _scraped(self) -> Any:
        if self._registry is None:
            from prometheus_client import CollectorRegistry, ProcessCollector

            registry = CollectorRegistry(auto_describe=False)
            registry.register(ResponderCollector(self.responder))
            ProcessCollector(registry=registry)
            self._registry = registry
        return self._registry


class ResponderCollector:
    """Yields the responder's metric families from its services' counts, read when scraped."""

    def __init__(self, responder: Responder) -> None:
        self.responder = responder

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily,
        )

        jobs = self.responder.jobs
        tally = jobs.tally.snapshot()
        accepted = CounterMetricFamily(f"{PREFIX}_jobs_accepted", "Jobs accepted since the service started",
                                       labels=["type"])
        for job_type, count in sorted(tally.accepted.items()):
            accepted.add_metric([job_type], count)
        yield accepted
        finished = CounterMetricFamily(f"{PREFIX}_jobs_finished", "Jobs finished since the service started",
                                       labels=["type", "status"])
        for (job_type, status), count in sorted(tally.finished.items()):
            finished.add_metric([job_type, status], count)
        yield finished
        durations = HistogramMetricFamily(f"{PREFIX}_job_duration_seconds", "How long finished jobs ran",
                                          labels=["type"])
        for job_type, histogram in sorted(tally.durations.items()):
            cumulative, buckets = 0, []
            for bound, count in zip((*DURATION_BUCKETS, float("inf")), histogram.counts):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            durations.add_metric([job_type], buckets, histogram.total_seconds)
        yield durations

        status = self.responder.idle_status()
        yield _gauge("jobs_queued", "Jobs waiting for a worker", status.queued_jobs)
        yield _gauge("jobs_running", "Jobs running now", status.running_jobs)
        yield _gauge("idle_seconds", "Seconds since the box last worked (0 while it works)", status.idle_seconds)
        yield _gauge("draining", "1 while the box is draining (takes no new jobs), else 0", int(status.draining))
        uptime = _box_uptime()
        if uptime is not None:
            yield _gauge("box_uptime_seconds", "Seconds since the machine booted", uptime)

        uploads = self.responder.uploads
        counts = uploads.counts() if uploads is not None else {}
        for state, meaning in (("pending", "Deliveries spooled and not yet made"),
                               ("failed", "Deliveries given up on, kept in the spool's failed directory")):
            family = GaugeMetricFamily(f"{PREFIX}_uploads_{state}", meaning, labels=["kind"])
            for kind in _UPLOAD_KINDS:
                family.add_metric([kind], counts.get(f"{state}_{kind}s", 0))
            yield family
        attempts = CounterMetricFamily(f"{PREFIX}_upload_attempts", "Deliveries tried since the service started",
                                       labels=["kind", "outcome"])
        for (kind, outcome), count in sorted((uploads.attempt_counts() if uploads is not None else {}).items()):
            attempts.add_metric([kind, outcome], count)
        yield attempts

        yield InfoMetricFamily(f"{PREFIX}_build", "The responder's version", value={"version": __version__})


def _gauge(name: str, documentation: str, value: float) -> Any:
    from prometheus_client.core import GaugeMetricFamily

    return GaugeMetricFamily(f"{PREFIX}_{name}", documentation, value=value)


def _box_uptime(path: Path = Path("/proc/uptime")) -> float | None:
    try:
        return float(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
