"""Server Responder beside adnanh's `webhook`, on loopback: latency, throughput, memory, start time, job records.

One run starts both, checks that every endpoint answers `9`, then alternates timed `hey` rounds between
webhook running `sh -c 'echo 9'`, the responder's `POST /jobs?wait=10` and its original form protocol `POST /`,
and prints medians over the rounds (min–max) with ratios to webhook; beside them, the job path alone without the
service (benchmarks/job_floor.py). Then memory (RSS and PSS), start time, the API's latency with 100 and
--records job records kept, and the pauses while old records are pruned; last a summary of the targets with
what was measured. Prints figures and exits 0 whatever they are; asserts nothing
about speed.
Usage: `benchmarks/run [--quick] [--rounds 3] [--records 100000] ...` (see --help).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import itertools
import json
import math
import os
import platform
import random
import re
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOKEN = "benchmark-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
ECHO_JOB = {"type": "script", "language": "sh", "script": "echo 9"}
SEED_JOB = {"type": "script", "language": "sh", "script": "echo seed"}
QUICK = {"requests": 32, "paced": 10, "rounds": 1, "records": 1000, "jobs_for_rss": 512, "starts": 2,
         "record_requests": 30, "seed_clients": 16, "pruning_retained": 100, "segments_released": 1}
FULL = {"requests": 200, "paced": 30, "rounds": 3, "records": 100_000, "jobs_for_rss": 10_000, "starts": 5,
        "record_requests": 200, "seed_clients": 16, "pruning_retained": 1000, "segments_released": 2}
# Seen in a service's child's command line: a helper process running the service's own code, not a job.
SERVICE_CODE = "server_responder"
# Jobs the pruning measurement keeps waiting at most: enough to keep every worker busy, few enough that the
# submits go on while the jobs past retention finish and their oldest records are pruned.
PRUNING_BACKLOG = 8
# The clients of the concurrent rounds, and the responder's `workers` there: webhook runs every command it is
# asked for at once, so the responder may run as many jobs at once as there are clients asking.
CLIENTS = 8
# The targets.
P50_RATIO_MAX = 1.5
RATE_RATIO_MIN = 1.0
READY_S_MAX = 0.300
IDLE_RSS_MIB_MAX = 40.0
PRUNING_PAUSE_MS_MAX = 5.0
# Around a segment's deletion as seen in its directory: before it, current records moved forward and a sync;
# after it, whatever the kernel still does once the file is unlinked.
DELETION_BEFORE_S, DELETION_AFTER_S = 0.005, 0.020
# "Flat": the p50 with --records kept within this factor of the p50 with 100 (room for run-to-run noise only).
FLAT_RATIO_MAX = 1.2


@dataclass
class HeyFigures:
    requests_per_s: float
    p50_ms: float
    p95_ms: float
    statuses: dict[int, int]
    errors: int

    def unexpected(self, status: int) -> int:
        return self.errors + sum(count for code, count in self.statuses.items() if code != status)


def parse_hey(text: str) -> HeyFigures:
    """The figures of hey's summary: Requests/sec, the 50% and 95% latencies, status codes and errors."""
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    quantiles = {int(p): 1000 * float(s) for p, s in re.findall(r"^\s+(\d+)% in ([\d.]+) secs", text, re.M)}
    statuses = {int(code): int(n) for code, n in re.findall(r"^\s+\[(\d{3})\]\s+(\d+) responses", text, re.M)}
    errors_part = text.partition("Error distribution:")[2]
    errors = sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]\s", errors_part, re.M))
    return HeyFigures(float(rate.group(1)) if rate else 0.0, quantiles.get(50, float("nan")),
                      quantiles.get(95, float("nan")), statuses, errors)


@dataclass
class Endpoint:
    label: str
    url: str
    body: bytes = b""
    content_type: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "POST"
    status: int = 200

    def hey(self, requests: int, clients: int) -> HeyFigures:
        argv = ["hey", "-n", str(requests), "-c", str(clients), "-m", self.method, "-t", "60"]
        for name, value in self.headers.items():
            argv += ["-H", f"{name}: {value}"]
        if self.body:
            argv += ["-T", self.content_type, "-d", self.body.decode()]
        done = subprocess.run(argv + [self.url], capture_output=True, text=True, check=True)
        return parse_hey(done.stdout)

    def fetch(self) -> tuple[int, bytes]:
        headers = {**self.headers, **({"Content-Type": self.content_type} if self.content_type else {})}
        request = urllib.request.Request(self.url, data=self.body or None, method=self.method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()


@dataclass
class Latencies:
    """Seconds per request, and how many answers were not the status expected."""
    seconds: list[float] = field(default_factory=list)
    unexpected: int = 0

    def add(self, seconds: float, expected: bool) -> None:
        self.seconds.append(seconds)
        self.unexpected += not expected

    def ms(self, quantile: float) -> float:
        """The nearest-rank quantile in milliseconds (1.0: the slowest)."""
        if not self.seconds:
            return float("nan")
        ordered = sorted(self.seconds)
        return 1000 * ordered[max(0, math.ceil(quantile * len(ordered)) - 1)]


class ApiClient:
    """One keep-alive connection to the responder, timing each request from sending to the last byte read."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def request(self, method: str, path: str, document: object = None) -> tuple[int, bytes, float]:
        body = json.dumps(document).encode() if document is not None else None
        headers = {**BEARER, **({"Content-Type": "application/json"} if body else {})}
        started = time.perf_counter()
        try:
            self.connection.request(method, path, body=body, headers=headers)
            answer = self.connection.getresponse()
            content = answer.read()
        except (OSError, http.client.HTTPException):
            # Counted as a failed request (status 0); the next one gets a fresh connection.
            self.close()
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            return 0, b"", time.perf_counter() - started
        return answer.status, content, time.perf_counter() - started

    def busy_jobs(self) -> int | None:
        """Queued plus running jobs, as `GET /health` counts them; None without an answer."""
        status, content, _ = self.request("GET", "/health")
        if status != 200:
            return None
        health = json.loads(content)
        return health["queued_jobs"] + health["running_jobs"]

    def close(self) -> None:
        self.connection.close()


@dataclass
class Memory:
    """A server's memory, and that of the helper processes it runs its own code in (never its jobs).

    RSS counts every page a process maps, shared ones too, so the RSS of a service and its helpers added up
    counts their shared pages twice; PSS splits each shared page between the processes that share it."""
    service_rss_mib: float
    helpers_rss_mib: float
    helpers: int
    pss_mib: float


def kib_line_mib(path: str, name: str) -> float:
    """A `Name:  1234 kB` line of a /proc file, in MiB."""
    for line in Path(path).read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{path}: no {name} line")


def rss_mib(pid: int) -> float:
    return kib_line_mib(f"/proc/{pid}/status", "VmRSS")


def pss_mib(pid: int) -> float:
    return kib_line_mib(f"/proc/{pid}/smaps_rollup", "Pss")


def children(pid: int) -> list[int]:
    found: list[int] = []
    for listing in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found += [int(child) for child in listing.read_text().split()]
    return found


def service_helpers(pid: int) -> list[int]:
    """Descendants running the service's code; a job, and whatever it starts, is left out."""
    helpers = []
    for child in children(pid):
        with contextlib.suppress(OSError):
            if SERVICE_CODE in Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode():
                helpers += [child, *service_helpers(child)]
    return helpers


@dataclass
class Server:
    name: str
    process: subprocess.Popen
    port: int
    spawned_at: float

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def memory(self) -> Memory:
        helpers_rss, pss = 0.0, pss_mib(self.process.pid)
        helpers = service_helpers(self.process.pid)
        for helper in helpers:
            with contextlib.suppress(OSError):
                helpers_rss, pss = helpers_rss + rss_mib(helper), pss + pss_mib(helper)
        return Memory(rss_mib(self.process.pid), helpers_rss, len(helpers), pss)

    def wait_until_idle(self, timeout: float = 7200) -> None:
        """Until `GET /health` counts no queued or running job."""
        client = ApiClient(self.port)
        deadline = time.monotonic() + timeout
        try:
            while client.busy_jobs() != 0:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} still busy after {timeout}s")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def seconds_to_first_answer(server: Server, path: str, timeout: float = 60) -> float:
    """Seconds from the spawn of the process to its first 200 on `path`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.process.returncode} before answering")
        try:
            with urllib.request.urlopen(server.url + path, timeout=1) as answer:
                if answer.status == 200:
                    return time.monotonic() - server.spawned_at
        except (OSError, urllib.error.HTTPError):
            time.sleep(0.005)
    raise RuntimeError(f"{server.name} gave no 200 on {path} within {timeout}s")


def spawn(name: str, argv: list[str], home: Path, port: int, env: dict[str, str] | None = None) -> Server:
    home.mkdir(parents=True, exist_ok=True)
    with (home / "output.log").open("ab") as output:
        # A session of its own: Ctrl-C reaches only the benchmark, which then stops the servers in order.
        process = subprocess.Popen(argv, env=env, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    return Server(name, process, port, time.monotonic())


def start_webhook(home: Path) -> Server:
    hooks = [{"id": "echo", "execute-command": "/bin/sh", "include-command-output-in-response": True,
              "pass-arguments-to-command": [{"source": "string", "name": "-c"},
                                            {"source": "string", "name": "echo 9"}]}]
    home.mkdir(parents=True, exist_ok=True)
    (home / "hooks.json").write_text(json.dumps(hooks))
    port = free_port()
    return spawn("webhook", ["webhook", "-hooks", str(home / "hooks.json"), "-ip", "127.0.0.1", "-port", str(port)],
                 home, port)


def responder_command(home: Path, settings: dict[str, object], *argv: str) -> tuple[list[str], dict[str, str]]:
    """The argv of `server_responder *argv` and the environment that gives it `settings` in `home`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SERVER_RESPONDER_", "AWS_"))}
    env.update({"SERVER_RESPONDER_DATA_DIR": str(home / "data"), "SERVER_RESPONDER_LOG_DIR": str(home / "logs"),
                "SERVER_RESPONDER_STORE": str(home / "results"), "SERVER_RESPONDER_API_KEY": TOKEN})
    env.update({f"SERVER_RESPONDER_{key.upper()}": str(value) for key, value in settings.items()})
    # The interpreter of the benchmark's own venv (benchmarks/run), which has the package installed.
    return [sys.executable, "-m", "server_responder", *argv], env


def start_responder(home: Path, **settings: object) -> Server:
    port = free_port()
    argv, env = responder_command(home, settings, "serve", "--port", str(port))
    return spawn("responder", argv, home, port, env)


def responder_settings(home: Path, **settings: object) -> dict[str, object]:
    """The settings a responder started with `settings` in `home` uses, as its `config` command prints them."""
    argv, env = responder_command(home, settings, "config")
    return json.loads(subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout)


@contextlib.contextmanager
def running_responder(home: Path, **settings: object):
    responder = start_responder(home, **settings)
    try:
        seconds_to_first_answer(responder, "/health")
        yield responder
    finally:
        responder.stop()


def echo_job_endpoint(responder: Server) -> Endpoint:
    return Endpoint("responder POST /jobs", f"{responder.url}/jobs?wait=10", json.dumps(ECHO_JOB).encode(),
                    "application/json", BEARER)


def echo_endpoints(webhook: Server, responder: Server) -> list[Endpoint]:
    form = urllib.parse.urlencode({"api_token": TOKEN,
                                   "payload": json.dumps({"script_payload": "echo 9", "language": "sh"})})
    return [
        Endpoint("webhook", f"{webhook.url}/hooks/echo"),
        echo_job_endpoint(responder),
        Endpoint("responder POST / form", f"{responder.url}/", form.encode(), "application/x-www-form-urlencoded"),
    ]


def successful_answer(endpoint: Endpoint) -> bytes:
    """The body of the endpoint's answer; raises unless it has the status expected."""
    status, body = endpoint.fetch()
    if status != endpoint.status:
        raise RuntimeError(f"{endpoint.label}: {status} {body[:300]!r}")
    return body


def answer_of_nine(endpoint: Endpoint) -> str:
    """The job's output as the endpoint reports it; raises unless the request succeeded."""
    body = successful_answer(endpoint)
    if endpoint.label == "webhook":
        return body.decode()
    document = json.loads(body)
    return document["stdout"] if "stdout" in document else document["results"]


def spread(values: list[float], digits: int = 1) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def ratio(values: list[float], reference: list[float]) -> str:
    return f"×{statistics.median(values) / statistics.median(reference):.2f}"


def header(webhook_version: str, responder_version: str, workers: object) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    hey = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "hey"], capture_output=True, text=True).stdout
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    python = f"Python {platform.python_version()} ({os.path.realpath(sys.executable)})"
    return (f"{now}; nproc {os.cpu_count()}; {cpu}; load average {load} at start\n"
            f"{webhook_version}; Server Responder {responder_version} on {python}; hey {hey or 'unknown'}; "
            "loopback 127.0.0.1\n"
            f"responder of the `echo 9` rounds and the memory readings: workers = {workers} (as its `config` "
            f"reads it), for up to {CLIENTS} clients at once; webhook runs every command at once")


EchoFigures = dict[str, dict[str, list[float]]]


def measure_echo(endpoints: list[Endpoint], args: argparse.Namespace) -> EchoFigures:
    figures = {e.label: {"p50_1": [], "p95_1": [], "rps_8": [], "p50_8": [], "unexpected": []} for e in endpoints}
    for round_number in range(args.rounds):
        # Rotated each round, so no server always runs first or last while the machine's load drifts.
        shift = round_number % len(endpoints)
        for endpoint in endpoints[shift:] + endpoints[:shift]:
            one = endpoint.hey(args.requests, 1)
            eight = endpoint.hey(args.requests, CLIENTS)
            row = figures[endpoint.label]
            row["p50_1"].append(one.p50_ms)
            row["p95_1"].append(one.p95_ms)
            row["rps_8"].append(eight.requests_per_s)
            row["p50_8"].append(eight.p50_ms)
            row["unexpected"].append(one.unexpected(endpoint.status) + eight.unexpected(endpoint.status))
    return figures


def print_echo_table(figures: EchoFigures, args: argparse.Namespace) -> None:
    print(f"\n`echo 9` per request, {args.requests} requests per measurement, {args.rounds} round(s) alternating; "
          "median (min–max) over rounds, ×ratio to webhook")
    print(f"{'':<24}{'1 client p50 ms':>26}{'1 client p95 ms':>26}{'8 clients req/s':>28}{'8 clients p50 ms':>26}"
          f"{'non-200':>9}")
    reference = figures["webhook"]
    for label, row in figures.items():
        cells = [f"{spread(row[key], 0 if key == 'rps_8' else 1)} {ratio(row[key], reference[key])}"
                 for key in ("p50_1", "p95_1", "rps_8", "p50_8")]
        print(f"{label:<24}{cells[0]:>26}{cells[1]:>26}{cells[2]:>28}{cells[3]:>26}{int(sum(row['unexpected'])):>9}")


# The pause between the paced requests: a caller now and then rather than back to back, as most are.
PACE_SECONDS = 0.1


def measure_paced(endpoints: list[Endpoint], args: argparse.Namespace) -> dict[str, list[float]]:
    """Per endpoint, the p50 of each round of `args.paced` requests from one client, one every PACE_SECONDS."""
    p50s: dict[str, list[float]] = {endpoint.label: [] for endpoint in endpoints}
    for round_number in range(args.rounds):
        shift = round_number % len(endpoints)
        for endpoint in endpoints[shift:] + endpoints[:shift]:
            latencies = Latencies()
            for _ in range(args.paced):
                time.sleep(PACE_SECONDS)
                started = time.perf_counter()
                status, _ = endpoint.fetch()
                latencies.add(time.perf_counter() - started, status == endpoint.status)
            p50s[endpoint.label].append(latencies.ms(0.5))
    print(f"\n`echo 9` paced: 1 client, a request every {PACE_SECONDS * 1000:.0f} ms on a new connection, "
          f"{args.paced} per round, {args.rounds} round(s); median (min–max) of the rounds' p50, ×ratio to webhook")
    for label, figures in p50s.items():
        print(f"{label:<24}{spread(figures, 1):>26} ms {ratio(figures, p50s['webhook'])}")
    return p50s


def measure_floor(echo: EchoFigures, args: argparse.Namespace) -> Floor | None:
    """The job path without the service (benchmarks/job_floor.py), beside webhook's figures above: how far any
    change to the service could go. Its isolated figures as ratios to webhook's, None where it cannot run."""
    jobs = 2 * args.requests
    print(f"\nthe job path alone, without HTTP, journal, workspace, result document or log line "
          f"(benchmarks/job_floor.py: `sh -c 'echo 9'`, {jobs} jobs per measurement, {args.rounds} round(s)); "
          "median (min–max), ×ratio to webhook's figures above")
    if os.geteuid() != 0:
        print("skipped: it runs jobs as the service run as root does")
        return None
    rounds = []
    for _ in range(args.rounds):
        ran = subprocess.run([sys.executable, str(REPO / "benchmarks" / "job_floor.py"), "--jobs", str(jobs),
                              "--threads", str(CLIENTS)], capture_output=True, text=True, check=True)
        rounds.append(json.loads(ran.stdout))
    print(f"{'':<70}{'1 at a time p50 ms':>22}{f'{CLIENTS} at once jobs/s':>24}")
    for name in ("isolated", "bare"):
        p50s = [found[name]["p50_1_ms"] for found in rounds]
        rates = [found[name]["jobs_per_s"] for found in rounds]
        cells = (f"{spread(p50s, 1)} {ratio(p50s, echo['webhook']['p50_1'])}",
                 f"{spread(rates, 0)} {ratio(rates, echo['webhook']['rps_8'])}")
        print(f"{name + ': ' + rounds[0][name]['label']:<70}{cells[0]:>22}{cells[1]:>24}")
    median = statistics.median
    return Floor(median(found["isolated"]["p50_1_ms"] for found in rounds) / median(echo["webhook"]["p50_1"]),
                 median(found["isolated"]["jobs_per_s"] for found in rounds) / median(echo["webhook"]["rps_8"]))


def memory_of(webhook: Server, responder: Server) -> dict[str, Memory]:
    return {"webhook": webhook.memory(), "responder": responder.memory()}


def measure_memory(webhook: Server, responder: Server, idle: dict[str, Memory], load: list[Endpoint],
                   jobs: int) -> None:
    """Each server's memory idle after warm-up, beside its memory after `jobs` more requests at 8 clients."""
    failed = {endpoint.label: endpoint.hey(jobs, CLIENTS).unexpected(200) for endpoint in load}
    loaded = memory_of(webhook, responder)
    helpers = f"{idle['responder'].helpers} idle, {loaded['responder'].helpers} after"
    print(f"\nmemory MiB (RSS: VmRSS; PSS: Pss of smaps_rollup)  idle after warm-up   after {jobs} more requests "
          f"at {CLIENTS} clients")
    rows = [("webhook RSS", "webhook", "service_rss_mib"), ("webhook PSS", "webhook", "pss_mib"),
            ("responder service RSS", "responder", "service_rss_mib"),
            (f"responder helpers RSS (the launcher; {helpers})", "responder", "helpers_rss_mib"),
            ("responder service + helpers PSS", "responder", "pss_mib")]
    for label, name, figure in rows:
        print(f"{label:<56}{getattr(idle[name], figure):>12.1f}{getattr(loaded[name], figure):>18.1f}")
    for label, count in failed.items():
        if count:
            print(f"  {label}: {count} answers not 200 under that load")


def seconds_to_first_job(responder: Server) -> float:
    """Seconds from the spawn of a responder that answers `GET /health` to its answer of a first `echo 9` job."""
    successful_answer(echo_job_endpoint(responder))
    return time.monotonic() - responder.spawned_at


WEBHOOK_READY, RESPONDER_READY, FIRST_JOB = "webhook GET /", "responder GET /health", "responder first POST /jobs?wait"


def measure_startup(home: Path, starts: int) -> dict[str, list[float]]:
    seconds: dict[str, list[float]] = {label: [] for label in (WEBHOOK_READY, RESPONDER_READY, FIRST_JOB)}
    for attempt in range(starts):
        webhook = start_webhook(home / f"start-webhook-{attempt}")
        try:
            seconds[WEBHOOK_READY].append(seconds_to_first_answer(webhook, "/"))
        finally:
            webhook.stop()
        responder = start_responder(home / f"start-responder-{attempt}")
        try:
            seconds[RESPONDER_READY].append(seconds_to_first_answer(responder, "/health"))
            # Right after: a job's first run includes the start of the launcher that starts it.
            seconds[FIRST_JOB].append(seconds_to_first_job(responder))
        finally:
            responder.stop()
    print(f"\nseconds from spawn to first 200, median (min–max) of {starts} starts; ×ratio to webhook")
    for label, figures in seconds.items():
        print(f"{label:<34}{spread(figures, 3):>26} {ratio(figures, seconds[WEBHOOK_READY])}")
    return seconds


@dataclass
class Seeding:
    ids: list[str]
    refused: Counter
    accepted_s: float
    finished_s: float


def seed(responder: Server, count: int, clients: int) -> Seeding:
    """`count` jobs through `POST /jobs` from `clients` keep-alive connections at once, then until all finished.

    A submit that is not accepted is counted and made up for, so that exactly `count` records are added."""
    ids: list[str] = []
    refused: Counter = Counter()
    lock = threading.Lock()

    def submit_until_done(tickets: itertools.count, wanted: int) -> None:
        client = ApiClient(responder.port)
        try:
            while next(tickets) < wanted:
                status, content, _ = client.request("POST", "/jobs", SEED_JOB)
                with lock:
                    if status == 202:
                        ids.append(json.loads(content)["id"])
                    else:
                        refused[status] += 1
        finally:
            client.close()

    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        for _ in range(3):
            tickets, wanted = itertools.count(), count - len(ids)
            for done in [pool.submit(submit_until_done, tickets, wanted) for _ in range(clients)]:
                done.result()
    accepted_s = time.monotonic() - started
    responder.wait_until_idle()
    return Seeding(ids, refused, accepted_s, time.monotonic() - started)


@dataclass
class Probe:
    """One route timed with job records kept: a request's path by its number, and the status that is right."""
    label: str
    method: str
    path: Callable[[int], str]
    status: int = 200
    document: object = None


def record_probes(ids: list[str], requests: int) -> list[Probe]:
    # Records read from all over the spool's history, oldest and newest alike; the same ones at every count.
    sample = random.Random(15).sample(ids, min(len(ids), requests))
    return [
        Probe("GET /jobs/{id}", "GET", lambda n: f"/jobs/{sample[n % len(sample)]}"),
        Probe("GET /jobs", "GET", lambda n: "/jobs"),
        Probe("GET /last_job", "GET", lambda n: "/last_job"),
        # Last: every submit adds a record.
        Probe("POST /jobs 202", "POST", lambda n: "/jobs", 202, SEED_JOB),
    ]


def time_probe(port: int, probe: Probe, requests: int) -> Latencies:
    latencies = Latencies()
    client = ApiClient(port)
    try:
        for number in range(requests):
            status, _, seconds = client.request(probe.method, probe.path(number), probe.document)
            latencies.add(seconds, status == probe.status)
    finally:
        client.close()
    return latencies


RecordFigures = dict[int, dict[str, Latencies]]


def measure_records(home: Path, args: argparse.Namespace) -> RecordFigures:
    """Each count of records seeded into a data dir of its own, then the routes timed on services started afresh
    on each, alternating between the counts round by round, so that drift of the machine falls on both."""
    counts = sorted({100, args.records})
    # Room for every record seeded and every job the measurement submits, kept by count and by age alike,
    # and a queue that takes the whole seeding at once.
    room = max(counts) + args.rounds * args.record_requests + 1000
    settings = {"jobs_retained": room, "jobs_retained_minutes": 60 * 24 * 365, "queue_size": room,
                "max_connections_per_client": 0}
    print(f"\njob records ({', '.join(f'{k} = {v}' for k, v in settings.items())}); seeded through POST /jobs "
          f"from {args.seed_clients} connections at once, each count in a data dir of its own")
    ids: dict[int, list[str]] = {}
    for count in counts:
        with running_responder(home / str(count), **settings) as responder:
            seeding = seed(responder, count, args.seed_clients)
        ids[count] = seeding.ids
        seeded = len(seeding.ids)
        print(f"{count:>7} records: {seeded} seeded, accepted in {seeding.accepted_s:.1f} s "
              f"({seeded / seeding.accepted_s:.0f} jobs/s), all finished after {seeding.finished_s:.1f} s "
              f"({seeded / seeding.finished_s:.0f} jobs/s)"
              + (f"; not accepted and made up for: {dict(seeding.refused)} (status 0: connection failed)"
                 if seeding.refused else ""))
    figures: RecordFigures = {count: {} for count in counts}
    restarts: dict[int, list[float]] = {count: [] for count in counts}
    for round_number in range(args.rounds):
        shift = round_number % len(counts)
        for count in counts[shift:] + counts[:shift]:
            # A service started afresh on a copy of the records as seeded (the submits timed add some): what
            # is compared is the number kept, not the history of a process that has just run them all.
            seeded_home, copy = home / str(count), home / f"{count}-round-{round_number}"
            shutil.copytree(seeded_home / "data", copy / "data", symlinks=True)
            responder = start_responder(copy, store=str(seeded_home / "results"), **settings)
            try:
                restarts[count].append(seconds_to_first_answer(responder, "/health"))
                for probe in record_probes(ids[count], args.record_requests):
                    timed = time_probe(responder.port, probe, args.record_requests)
                    kept = figures[count].setdefault(probe.label, Latencies())
                    kept.seconds += timed.seconds
                    kept.unexpected += timed.unexpected
                responder.wait_until_idle()
                if round_number == args.rounds - 1:
                    client = ApiClient(responder.port)
                    kept_ids = [client.request("GET", f"/jobs/{job_id}")[0] for job_id in (ids[count][0],
                                                                                          ids[count][-1])]
                    client.close()
                    print(f"{count:>7} records: the oldest and newest seeded record answer {kept_ids[0]} and "
                          f"{kept_ids[1]}")
            finally:
                responder.stop()
                shutil.rmtree(copy, ignore_errors=True)
    for count in counts:
        print(f"{count:>7} records: started afresh on them {args.rounds} time(s), first 200 on GET /health after "
              f"{spread(restarts[count], 2)} s")
    print_records_table(figures, args.record_requests * args.rounds, args.rounds)
    return figures


def print_records_table(figures: RecordFigures, requests: int, rounds: int) -> None:
    few, many = min(figures), max(figures)
    print(f"\nAPI latency ms with job records kept, {requests} requests each at 1 client over {rounds} alternating "
          f"round(s), each on a service started afresh on them (keep-alive; the jobs submitted run meanwhile); "
          f"×{many} vs {few} records (flat: ×1.00)")
    print(f"{'':<18}" + "".join(f"{f'{n} p50':>12}{'p95':>8}{'max':>8}" for n in (few, many))
          + f"{'×p50':>8}{'×p95':>8}{'×max':>8}{'wrong status':>14}")
    for label in figures[few]:
        at = (figures[few][label], figures[many][label])
        cells = "".join(f"{lat.ms(0.5):>12.2f}{lat.ms(0.95):>8.2f}{lat.ms(1.0):>8.2f}" for lat in at)
        ratios = "".join(f"{at[1].ms(q) / at[0].ms(q):>8.2f}" for q in (0.5, 0.95, 1.0))
        print(f"{label:<18}{cells}{ratios}{at[0].unexpected + at[1].unexpected:>14}")


BELOW, PAST = PHASES = ("below retention", "past retention")


@dataclass
class PruningRun:
    """One responder's figures in the two phases, split where the number of jobs kept passes `retained`."""

    submits: dict[str, Latencies] = field(default_factory=lambda: {p: Latencies() for p in PHASES})
    health: dict[str, Latencies] = field(default_factory=lambda: {p: Latencies() for p in PHASES})
    # `GET /jobs/{id}` of a record kept and no longer in memory: read from the journal, whose deletion of an
    # old segment is the longest part of pruning.
    reads: dict[str, Latencies] = field(default_factory=lambda: {p: Latencies() for p in PHASES})
    # Between two answers to the poller: a pause of the service shows as a long one.
    gaps: dict[str, Latencies] = field(default_factory=lambda: {p: Latencies() for p in PHASES})
    # (when, the gap it ended) of each answer to the poller past retention
    answers: list[tuple[float, float]] = field(default_factory=list)
    # When each old segment of the journal began to go and when it was gone (perf_counter)
    deletions: list[tuple[float, float]] = field(default_factory=list)
    jobs: int = 0


@dataclass
class Pruning:
    # With `jobs_retained` = retained, and the same jobs on a responder that keeps them all.
    pruned: PruningRun
    control: PruningRun

    def pause_ms(self, quantile: float) -> float:
        """The gap past retention beyond the one over the same jobs where nothing is pruned: what pruning adds to
        the scheduling noise of jobs."""
        return self.pruned.gaps[PAST].ms(quantile) - self.control.gaps[PAST].ms(quantile)

    def longest_gap_at_deletions_ms(self) -> float:
        """The longest gap between two answers that overlaps the deletion of a segment (widened by what comes
        before it, moving current records forward and a sync, and by what the kernel does after)."""
        windows = [(began - DELETION_BEFORE_S, ended + DELETION_AFTER_S) for began, ended in self.pruned.deletions]
        overlapping = [gap for answered, gap in self.pruned.answers
                       if any(answered - gap < end and answered > start for start, end in windows)]
        return 1000 * max(overlapping, default=float("nan"))

    def deletion_pause_ms(self) -> float:
        """The longest gap at a deletion beyond the p99 gap where nothing is pruned."""
        return self.longest_gap_at_deletions_ms() - self.control.gaps[PAST].ms(0.99)

    def target_pause_ms(self) -> float:
        """Each record pruned shows in the p99 gap; a segment's deletion, the longest part, at the deletions
        (when the run deleted any: `--segments-released 0` may not)."""
        pauses = [self.pause_ms(0.99)]
        if self.pruned.deletions:
            pauses.append(self.deletion_pause_ms())
        return max(pauses)


class JobCount:
    """Jobs submitted (their ids), and busy as `GET /health` last counted them; the submitter waits on it for
    room."""

    def __init__(self, first_id: str) -> None:
        self.changed = threading.Condition()
        self.ids = [first_id]
        self.busy = 0

    @property
    def submitted(self) -> int:
        return len(self.ids)

    def phase(self, retained: int) -> str:
        return PHASES[self.submitted - self.busy > retained]

    def kept_record(self, retained: int) -> str:
        """A finished job's id that retention keeps and the service no longer holds in memory."""
        return self.ids[max(0, self.submitted - retained * 9 // 10)]


def poll_service(port: int, count: JobCount, retained: int, run: PruningRun, stop: threading.Event) -> None:
    """`GET /health` and `GET /jobs/{id}` in turn, back to back: their latency, and the time between answers."""
    client = ApiClient(port)
    try:
        previous = time.perf_counter()
        while not stop.is_set():
            started = time.perf_counter()
            busy = client.busy_jobs()
            now = time.perf_counter()
            with count.changed:
                count.busy = count.busy if busy is None else busy
                phase = count.phase(retained)
                kept = count.kept_record(retained)
                count.changed.notify_all()
            run.health[phase].add(now - started, busy is not None)
            run.gaps[phase].add(now - previous, True)
            if phase == PAST:
                run.answers.append((now, now - previous))
            status, _, seconds = client.request("GET", f"/jobs/{kept}")
            previous, now = now, time.perf_counter()
            run.reads[phase].add(seconds, status == 200)
            run.gaps[phase].add(now - previous, True)
            if phase == PAST:
                run.answers.append((now, now - previous))
            previous = now
    finally:
        client.close()


class SegmentWatch:
    """When the journal's old segments leave its directory (renamed out, or unlinked) and are gone, from inotify
    events on it: the times a pause for their deletion would show in."""

    _MOVED_FROM, _DELETE = 0x40, 0x200
    _EVENT = struct.Struct("iIII")
    _SEGMENT = re.compile(r"(journal|released)\.(\d+)")

    def __init__(self, journal: Path) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.descriptor = libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
        if self.descriptor < 0 or libc.inotify_add_watch(self.descriptor, os.fsencode(journal),
                                                          self._MOVED_FROM | self._DELETE) < 0:
            raise OSError(ctypes.get_errno(), f"inotify on {journal}")
        self.began: dict[str, float] = {}  # segment number -> when it left the journal
        self.ended: dict[str, float] = {}  # -> when its file was unlinked
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch)
        self.thread.start()

    def _watch(self) -> None:
        poller = select.poll()
        poller.register(self.descriptor, select.POLLIN)
        while True:
            if not poller.poll(100):
                if self.stop.is_set():
                    return  # after every event queued before the stop was read
                continue
            data, now, offset = os.read(self.descriptor, 65536), time.perf_counter(), 0
            while offset < len(data):
                _, mask, _, length = self._EVENT.unpack_from(data, offset)
                name = data[offset + self._EVENT.size:offset + self._EVENT.size + length].rstrip(b"\0").decode()
                offset += self._EVENT.size + length
                found = self._SEGMENT.fullmatch(name)
                if found is None:
                    continue
                kind, number = found.groups()
                with self.lock:
                    if kind == "journal":
                        self.began.setdefault(number, now)
                    if mask & self._DELETE:
                        self.ended[number] = now

    def deletions(self) -> list[tuple[float, float]]:
        with self.lock:
            return [(began, self.ended.get(number, began)) for number, began in sorted(self.began.items())]

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        os.close(self.descriptor)


def pruning_run(home: Path, retained: int, jobs_retained: int, done: Callable[[PruningRun], bool]) -> PruningRun:
    """Jobs submitted one at a time, a few waiting at most, until `done`, while the poller runs."""
    run = PruningRun()
    stop = threading.Event()
    with running_responder(home, jobs_retained=jobs_retained, jobs_retained_minutes=0) as responder:
        # Not timed: the first job waits for the launcher's start.
        count = JobCount(json.loads(successful_answer(echo_job_endpoint(responder)))["id"])
        client = ApiClient(responder.port)
        segments = SegmentWatch(home / "data" / "jobs")
        poller = threading.Thread(target=poll_service, args=(responder.port, count, retained, run, stop))
        poller.start()
        try:
            while not done(run):
                with count.changed:
                    if not count.changed.wait_for(lambda: count.busy < PRUNING_BACKLOG, timeout=60):
                        raise RuntimeError("the responder's queue did not go down within 60 s")
                    phase = count.phase(retained)
                status, content, seconds = client.request("POST", "/jobs", SEED_JOB)
                run.submits[phase].add(seconds, status == 202)
                if status != 202:
                    raise RuntimeError(f"POST /jobs answered {status} {content[:300]!r}")
                with count.changed:
                    count.ids.append(json.loads(content)["id"])
                    count.busy += 1
                run.jobs = count.submitted
                run.deletions = segments.deletions()
                if run.jobs > 100 * max(retained, 1000):
                    raise RuntimeError(f"{len(run.deletions)} journal segment(s) deleted after {run.jobs} jobs")
            with count.changed:
                if not count.changed.wait_for(lambda: count.busy == 0, timeout=600):
                    raise RuntimeError("the responder's jobs did not finish within 600 s")
        finally:
            stop.set()
            poller.join()
            segments.close()
        run.deletions = segments.deletions()
        oldest = client.request("GET", f"/jobs/{count.ids[0]}")[0]
        status, content, _ = client.request("GET", "/jobs?limit=1000")
        listed = len(json.loads(content)["jobs"]) if status == 200 else f"HTTP {status}"
        client.close()
    print(f"  jobs_retained = {jobs_retained}: the first job's record answers {oldest} (404: pruned); "
          f"GET /jobs?limit=1000 lists {listed}")
    return run


def measure_pruning(home: Path, retained: int, segments_released: int) -> Pruning:
    """Submits go on, a few jobs waiting at a time, until as many were sent past `jobs_retained` as below it
    and the journal has deleted `segments_released` old segments; then as many jobs on a responder that keeps
    them all.

    Past retention every job that finishes prunes the oldest record, and now and then a segment of the journal
    whose records are all gone is deleted; the other responder runs the same jobs the same way and prunes
    nothing, so the two differ in the pruning only."""
    print(f"\npruning: {retained} jobs kept (jobs_retained_minutes = 0), jobs submitted one at a time (at most "
          f"{PRUNING_BACKLOG} waiting), at least as many past retention as below it and until the journal deleted "
          f"{segments_released} old segment(s), while GET /health and GET /jobs/{{id}} of a kept record (read from "
          "the journal) are polled in turn, back to back; then as many jobs on a responder keeping them all")

    def pruned_enough(run: PruningRun) -> bool:
        return (len(run.submits[PAST].seconds) >= max(1, len(run.submits[BELOW].seconds))
                and len(run.deletions) >= segments_released)

    pruned = pruning_run(home / "pruned", retained, retained, pruned_enough)
    control = pruning_run(home / "control", retained, pruned.jobs * 2, lambda run: run.jobs >= pruned.jobs)
    pruning = Pruning(pruned, control)
    print_pruning_table(pruning)
    return pruning


def print_pruning_table(pruning: Pruning) -> None:
    print(f"{'':<28}{'jobs':>6}{'submit p50':>11}{'p99':>7}{'max':>7}{'polls':>7}{'health p99':>11}"
          f"{'max':>7}{'read p99':>9}{'max':>7}{'gap p99 ms':>11}{'longest gap ms':>15}{'wrong status':>13}")
    for name, run in (("pruned", pruning.pruned), ("kept all", pruning.control)):
        for phase in PHASES:
            submits, health, reads, gaps = (figures[phase] for figures in (run.submits, run.health, run.reads,
                                                                             run.gaps))
            wrong = submits.unexpected + health.unexpected + reads.unexpected
            print(f"{f'{name}, {phase}':<28}{len(submits.seconds):>6}{submits.ms(0.5):>11.2f}{submits.ms(0.99):>7.2f}"
                  f"{submits.ms(1.0):>7.2f}{len(health.seconds) + len(reads.seconds):>7}{health.ms(0.99):>11.2f}"
                  f"{health.ms(1.0):>7.2f}{reads.ms(0.99):>9.2f}{reads.ms(1.0):>7.2f}"
                  f"{gaps.ms(0.99):>11.2f}{gaps.ms(1.0):>15.2f}{wrong:>13}")
    deleting = [1000 * (ended - began) for began, ended in pruning.pruned.deletions]
    print(f"  journal segments deleted: {len(deleting)} pruned (each from leaving the journal to unlinked: "
          f"{', '.join(f'{ms:.1f}' for ms in deleting) or '-'} ms), {len(pruning.control.deletions)} kept all")
    print(f"  the longest gap overlapping a deletion (from {DELETION_BEFORE_S * 1000:.0f} ms before to "
          f"{DELETION_AFTER_S * 1000:.0f} ms after it): {pruning.longest_gap_at_deletions_ms():.2f} ms, "
          f"{pruning.deletion_pause_ms():+.2f} ms beyond the p99 gap kept all")
    print(f"  past retention, pruned minus kept all: longest gap {pruning.pause_ms(1.0):+.2f} ms, "
          f"p99 gap {pruning.pause_ms(0.99):+.2f} ms")


@dataclass
class Floor:
    """The isolated job path alone, as ratios to webhook's p50 at 1 client and req/s at CLIENTS."""

    p50_ratio: float
    rate_ratio: float


@dataclass
class Target:
    name: str
    measured: str
    ratio: float
    met: bool
    # The figures beside the one measured that a reader needs to judge it.
    beside: str = ""


def targets(echo: EchoFigures, floor: Floor | None, idle: dict[str, Memory], startup: dict[str, list[float]],
            records: RecordFigures, pruning: Pruning) -> list[Target]:
    median = statistics.median
    found = []
    for label in list(echo)[1:]:
        p50, reference = median(echo[label]["p50_1"]), median(echo["webhook"]["p50_1"])
        found.append(Target(f"{label}: p50 1 client ≤{P50_RATIO_MAX}x webhook", f"{p50:.1f} ms",
                            p50 / reference, p50 / reference <= P50_RATIO_MAX,
                            f"the job path alone ×{floor.p50_ratio:.2f}" if floor else ""))
        rate, reference = median(echo[label]["rps_8"]), median(echo["webhook"]["rps_8"])
        found.append(Target(f"{label}: req/s {CLIENTS} clients ≥{RATE_RATIO_MIN}x webhook", f"{rate:.0f} req/s",
                            rate / reference, rate / reference >= RATE_RATIO_MIN,
                            f"the job path alone ×{floor.rate_ratio:.2f}" if floor else ""))
    ready = median(startup[RESPONDER_READY])
    found.append(Target(f"ready ≤{READY_S_MAX * 1000:.0f} ms (first 200 on GET /health)", f"{ready * 1000:.0f} ms",
                        ready / median(startup[WEBHOOK_READY]), ready <= READY_S_MAX,
                        f"first POST /jobs?wait answered after {median(startup[FIRST_JOB]) * 1000:.0f} ms"))
    responder, webhook = idle["responder"], idle["webhook"]
    found.append(Target(f"idle RSS ≤{IDLE_RSS_MIB_MAX:.0f} MiB (the service's own VmRSS)",
                        f"{responder.service_rss_mib:.2f} MiB", responder.service_rss_mib / webhook.service_rss_mib,
                        responder.service_rss_mib <= IDLE_RSS_MIB_MAX,
                        f"service + {responder.helpers} helper(s) PSS {responder.pss_mib:.2f} MiB"))
    few, many = min(records), max(records)
    for label in records[few]:
        p50 = records[many][label].ms(0.5)
        flat = p50 / records[few][label].ms(0.5)
        found.append(Target(f"{label} flat at {many} records (p50 ≤{FLAT_RATIO_MAX}x at {few})", f"{p50:.2f} ms",
                            flat, flat <= FLAT_RATIO_MAX))
    at_deletions, kept_p99 = pruning.longest_gap_at_deletions_ms(), pruning.control.gaps[PAST].ms(0.99)
    pause = pruning.target_pause_ms()
    found.append(Target(f"pruning pause ≤{PRUNING_PAUSE_MS_MAX:.0f} ms (gap at deletions and p99 gap, vs kept all)",
                        f"{pause:.1f} ms", at_deletions / kept_p99, pause <= PRUNING_PAUSE_MS_MAX,
                        f"longest gap at {len(pruning.pruned.deletions)} segment deletion(s) {at_deletions:.1f}, "
                        f"p99 gap {pruning.pause_ms(0.99):+.2f} vs kept all ({kept_p99:.1f})"))
    return found


def print_summary(found: list[Target]) -> None:
    print("\ntargets (ratios: to webhook; for flat, N records vs 100; for pruning, the longest gap at a deletion vs the "
          "p99 gap where all are kept)")
    for target in found:
        print(f"{target.name:<74}{target.measured:>12}{f'×{target.ratio:.2f}':>9}  "
              f"{'met' if target.met else 'NOT met':<9}{target.beside}")
    print(f"{sum(t.met for t in found)} of {len(found)} met")


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: " + json.dumps(QUICK))
    parser.add_argument("--requests", type=int, help=f"requests per timed measurement ({FULL['requests']})")
    parser.add_argument("--paced", type=int, help=f"paced requests per round ({FULL['paced']})")
    parser.add_argument("--rounds", type=int, help=f"alternating rounds ({FULL['rounds']})")
    parser.add_argument("--records", type=int, help=f"the large number of job records kept ({FULL['records']})")
    parser.add_argument("--record-requests", type=int,
                        help=f"requests per route timed with records kept ({FULL['record_requests']})")
    parser.add_argument("--seed-clients", type=int,
                        help=f"connections seeding the records at once ({FULL['seed_clients']})")
    parser.add_argument("--jobs-for-rss", type=int, help=f"jobs before the second RSS reading ({FULL['jobs_for_rss']})")
    parser.add_argument("--starts", type=int, help=f"starts timed per server ({FULL['starts']})")
    parser.add_argument("--pruning-retained", type=int,
                        help=f"jobs_retained of the pruning measurement ({FULL['pruning_retained']})")
    parser.add_argument("--segments-released", type=int,
                        help="journal segments the pruning measurement goes on until deleted "
                             f"({FULL['segments_released']})")
    args = parser.parse_args()
    for name, default in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    # hey sends n - n % c requests, so the counts run at CLIENTS clients are rounded up to a multiple of it.
    args.requests, args.jobs_for_rss = (-(-n // CLIENTS) * CLIENTS for n in (args.requests, args.jobs_for_rss))
    return args


def main() -> int:
    args = options()
    if not shutil.which("webhook") or not shutil.which("hey"):
        print("needs the Debian packages webhook and hey (benchmarks/run installs them)", file=sys.stderr)
        return 2
    # SIGTERM unwinds like Ctrl-C, through the `finally` that stops every server started.
    signal.signal(signal.SIGTERM, interrupt)
    home = Path(tempfile.mkdtemp(prefix="sr-bench-"))
    began = time.monotonic()
    try:
        with contextlib.ExitStack() as servers:
            webhook = start_webhook(home / "webhook")
            servers.callback(webhook.stop)
            responder = start_responder(home / "responder", workers=CLIENTS)
            servers.callback(responder.stop)
            seconds_to_first_answer(webhook, "/")
            seconds_to_first_answer(responder, "/health")
            with urllib.request.urlopen(f"{responder.url}/health") as answer:
                responder_version = json.load(answer)["version"]
            webhook_version = subprocess.run(["webhook", "-version"], capture_output=True,
                                             text=True).stdout.strip()
            workers = responder_settings(home / "responder", workers=CLIENTS)["workers"]
            print(header(webhook_version, responder_version, workers), flush=True)
            endpoints = echo_endpoints(webhook, responder)
            for endpoint in endpoints:
                answer = answer_of_nine(endpoint)
                if answer.strip() != "9":
                    raise RuntimeError(f"{endpoint.label} answered {answer!r}, not 9")
                endpoint.hey(20, 2)  # warm-up
            print("each endpoint answered 9 on a sample request before the timed rounds")
            responder.wait_until_idle()
            idle_memory = memory_of(webhook, responder)
            echo = measure_echo(endpoints, args)
            print_echo_table(echo, args)
            measure_paced(endpoints, args)
            floor = measure_floor(echo, args)
            measure_memory(webhook, responder, idle_memory, endpoints[:2], args.jobs_for_rss)
        startup = measure_startup(home, args.starts)
        records = measure_records(home / "records", args)
        pruning = measure_pruning(home / "pruning", args.pruning_retained, args.segments_released)
        print_summary(targets(echo, floor, idle_memory, startup, records, pruning))
        print(f"\nbenchmark ran {time.monotonic() - began:.0f} s")
    except KeyboardInterrupt:
        print("\ninterrupted; every server it started is stopped", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
