"""What the job service has done since it started, counted in plain Python for the metrics endpoint to read."""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from dataclasses import dataclass, field

from server_responder.jobs.record import Job

# Upper bounds of the job duration histogram's buckets, in seconds: from a trivial script to max_timeout's default.
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0)


@dataclass
class Durations:
    """One job type's histogram: a count per bucket (not cumulative; the last is above every bound) and the sum."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    total_seconds: float = 0.0

    def add(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.total_seconds += seconds


@dataclass(frozen=True)
class TallySnapshot:
    accepted: dict[str, int]
    finished: dict[tuple[str, str], int]
    durations: dict[str, Durations]


class JobTally:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._accepted: Counter[str] = Counter()
        self._finished: Counter[tuple[str, str]] = Counter()
        self._durations: dict[str, Durations] = {}

    def accepted(self, job_type: str) -> None:
        with self._lock:
            self._accepted[job_type] += 1

    def finished(self, job: Job) -> None:
        with self._lock:
            self._finished[(job.type, job.status)] += 1
            if job.duration_s is not None:
                self._durations.setdefault(job.type, Durations()).add(job.duration_s)

    def snapshot(self) -> TallySnapshot:
        with self._lock:
            return TallySnapshot(dict(self._accepted), dict(self._finished),
                                 {name: Durations(list(d.counts), d.total_seconds)
                                  for name, d in self._durations.items()})
