"""The serving process on one CPU, and every process it starts back on all the CPUs it may use.

The service's Python runs one thread at a time. Spread over CPUs, its threads hand the interpreter lock to
each other across them, each hand-off waking another CPU; on one CPU a hand-off is a switch. The launcher,
jobs, git and other commands get back the CPUs the service had before it pinned itself, so a job still has
every CPU (and a job on the service's CPU is moved off it by the scheduler like any other).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("server_responder.jobs")

# The CPUs the service may use, once it has pinned itself to one of them; None while it is not pinned.
_every_cpu: frozenset[int] | None = None


def pin_service() -> int | None:
    """Pin every thread of this process (and the threads it starts later) to one CPU, the last it may use;
    the CPU, or None where there is only one."""
    global _every_cpu
    allowed = frozenset(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None
    chosen = max(allowed)
    for task in Path("/proc/self/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), {chosen})
        except (ProcessLookupError, ValueError):
            continue  # a thread that has just ended
    _every_cpu = allowed
    return chosen


def announce_pinning(cpu: int | None) -> None:
    if cpu is not None and _every_cpu is not None:
        log.info(f"the service runs on CPU {cpu}; jobs on CPUs {', '.join(map(str, sorted(_every_cpu)))}",
                 extra={"event": "service.pinned", "cpu": cpu, "job_cpus": sorted(_every_cpu)})


def every_cpu() -> frozenset[int] | None:
    """What a process the service starts should run on, when that is more than the service's own CPU."""
    return _every_cpu


def unpin_this_process(cpus: frozenset[int] | None = None) -> None:
    """In a process the service started (before its exec, or the launcher at its start): every CPU again."""
    cpus = cpus if cpus is not None else _every_cpu
    if cpus is not None:
        os.sched_setaffinity(0, cpus)
