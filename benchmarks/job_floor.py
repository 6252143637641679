"""The job path alone, without the HTTP service: what no change to the service can go below.

Runs `sh -c 'echo 9'` the way the service runs a job, in the containment the service would detect here, as the job
user it would choose, through its launcher, with the service's process pinned to one CPU as `serve` pins it,
without HTTP, journal, workspace, result document or log line. Beside it, the same command started by a bare
`posix_spawn` from Python, without any of that isolation. For each, one job at a time (p50 of the jobs' times)
and --threads at once (jobs per second). Prints one JSON object. Run by bench_peer.py as root.
Usage: `python benchmarks/job_floor.py [--jobs 400] [--threads 8]`
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from server_responder.jobs.affinity import pin_service
from server_responder.jobs.containment import detect_containment
from server_responder.jobs.runner import job_environment, job_user_for, run_process
from server_responder.settings import Settings

ECHO = ["sh", "-c", "echo 9"]


def isolated_job(home: Path) -> tuple[Callable[[], None], Callable[[], None], str]:
    """One job as the service runs it (its cell, its user, its launcher), the way to close it, and its kind."""
    settings = Settings.from_env({"SERVER_RESPONDER_DATA_DIR": str(home / "data")})
    containment = detect_containment(settings)
    containment.start()
    run_as = job_user_for(settings.job_user, os.geteuid())
    workspace = home / "work"
    workspace.mkdir()
    if run_as is not None:
        os.chown(workspace, -1, run_as.gid)
        workspace.chmod(0o2770)
    environment = job_environment(workspace)
    names = itertools.count()
    lock = threading.Lock()

    def one() -> None:
        with lock:
            name = f"floor-{next(names)}"
        cell = containment.job(name)
        try:
            outcome = run_process(ECHO, cwd=workspace, env=environment, timeout=10, output_limit=1 << 20,
                                  run_as=run_as, cell=cell)
        finally:
            cell.remove()
        if outcome.stdout != "9\n":
            raise RuntimeError(f"the job answered {outcome.stdout!r}: {outcome.error or outcome.stderr}")

    user = run_as.name if run_as is not None else "the service's user"
    launcher = ", through the launcher" if getattr(containment, "launcher", None) is not None else ""
    return one, containment.close, f"{getattr(containment, 'kind', type(containment).__name__)}, as {user}{launcher}"


def bare_job() -> None:
    read, write = os.pipe()
    try:
        pid = os.posix_spawn("/bin/sh", ECHO, {"PATH": "/usr/bin:/bin"},
                             file_actions=[(os.POSIX_SPAWN_DUP2, write, 1)])
    finally:
        os.close(write)
    try:
        output = os.read(read, 64)
    finally:
        os.close(read)
    os.waitpid(pid, 0)
    if output != b"9\n":
        raise RuntimeError(f"the job answered {output!r}")


def one_at_a_time(job: Callable[[], None], jobs: int) -> float:
    """The p50 in ms of `jobs` jobs run one after the other."""
    times = []
    for _ in range(jobs):
        started = time.perf_counter()
        job()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def at_once(job: Callable[[], None], jobs: int, threads: int) -> float:
    """Jobs per second with `threads` threads each running its share of `jobs` back to back."""
    def share() -> None:
        for _ in range(jobs // threads):
            job()

    workers = [threading.Thread(target=share) for _ in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return (jobs // threads) * threads / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    pin_service()  # as `serve` does by default, before any thread starts
    with tempfile.TemporaryDirectory(prefix="sr-floor-") as home:
        isolated, close, kind = isolated_job(Path(home))
        try:
            isolated()  # the launcher's start, before anything is timed
            figures = {"isolated": {"label": kind}, "bare": {"label": "posix_spawn from Python, no isolation"}}
            for name, job in (("isolated", isolated), ("bare", bare_job)):
                figures[name]["p50_1_ms"] = one_at_a_time(job, args.jobs)
                figures[name]["jobs_per_s"] = at_once(job, args.jobs, args.threads)
        finally:
            close()
    json.dump(figures, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
