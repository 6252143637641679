"""Server Responder beside adnanh's `webhook`, on loopback: latency, throughput, memory, start time, job records.

One run starts both, checks that every endpoint answers `9`, then alternates timed `hey` rounds between
webhook running `sh -c 'echo 9'`, the responder's `POST /jobs?wait=10` and its original form protocol `POST /`,
and prints medians over the rounds (min–max) with ratios to webhook. Prints figures; asserts nothing about speed.
Usage: `benchmarks/run [--quick] [--rounds 3] [--records 100000] ...` (see --help).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOKEN = "benchmark-token"
ECHO_JOB = {"type": "script", "language": "sh", "script": "echo 9"}
SEED_JOB = {"type": "script", "language": "sh", "script": "echo seed"}
QUICK = {"requests": 32, "rounds": 1, "records": 1000, "jobs_for_rss": 512, "starts": 2, "record_requests": 20}
FULL = {"requests": 200, "rounds": 3, "records": 100_000, "jobs_for_rss": 10_000, "starts": 5, "record_requests": 30}


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
class Server:
    name: str
    process: subprocess.Popen
    port: int
    spawned_at: float

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"{self.name}: no VmRSS")

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


def start_responder(home: Path, **settings: object) -> Server:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SERVER_RESPONDER_", "AWS_"))}
    env.update({"SERVER_RESPONDER_DATA_DIR": str(home / "data"), "SERVER_RESPONDER_LOG_DIR": str(home / "logs"),
                "SERVER_RESPONDER_STORE": str(home / "results"), "SERVER_RESPONDER_API_KEY": TOKEN})
    env.update({f"SERVER_RESPONDER_{key.upper()}": str(value) for key, value in settings.items()})
    python = REPO / ".venv" / "bin" / "python"
    port = free_port()
    return spawn("responder", [str(python if python.exists() else sys.executable), "-m", "server_responder", "serve",
                               "--port", str(port)], home, port, env)


def echo_endpoints(webhook: Server, responder: Server) -> list[Endpoint]:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    form = urllib.parse.urlencode({"api_token": TOKEN,
                                   "payload": json.dumps({"script_payload": "echo 9", "language": "sh"})})
    return [
        Endpoint("webhook", f"{webhook.url}/hooks/echo"),
        Endpoint("responder POST /jobs", f"{responder.url}/jobs?wait=10", json.dumps(ECHO_JOB).encode(),
                 "application/json", bearer),
        Endpoint("responder POST / form", f"{responder.url}/", form.encode(), "application/x-www-form-urlencoded"),
    ]


def answer_of_nine(endpoint: Endpoint) -> str:
    """The job's output as the endpoint reports it; raises unless the request succeeded."""
    status, body = endpoint.fetch()
    if status != endpoint.status:
        raise RuntimeError(f"{endpoint.label}: {status} {body[:300]!r}")
    if endpoint.label == "webhook":
        return body.decode()
    document = json.loads(body)
    return document["stdout"] if "stdout" in document else document["results"]


def wait_until_idle(responder: Server, timeout: float = 3600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{responder.url}/health", timeout=10) as answer:
            health = json.load(answer)
        if health["queued_jobs"] == 0 and health["running_jobs"] == 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"responder still busy after {timeout}s")


def spread(values: list[float], digits: int = 1) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def ratio(values: list[float], reference: list[float]) -> str:
    return f"×{statistics.median(values) / statistics.median(reference):.2f}"


def header(webhook_version: str, responder_version: str) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    hey = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "hey"], capture_output=True, text=True).stdout
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"{now}; nproc {os.cpu_count()}; {cpu}; load average {load} at start\n"
            f"{webhook_version}; Server Responder {responder_version}; hey {hey or 'unknown'}; loopback 127.0.0.1")


def measure_echo(endpoints: list[Endpoint], args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    figures = {e.label: {"p50_1": [], "p95_1": [], "rps_8": [], "p50_8": [], "unexpected": []} for e in endpoints}
    for round_number in range(args.rounds):
        # Rotated each round, so no server always runs first or last while the machine's load drifts.
        shift = round_number % len(endpoints)
        for endpoint in endpoints[shift:] + endpoints[:shift]:
            one = endpoint.hey(args.requests, 1)
            eight = endpoint.hey(args.requests, 8)
            row = figures[endpoint.label]
            row["p50_1"].append(one.p50_ms)
            row["p95_1"].append(one.p95_ms)
            row["rps_8"].append(eight.requests_per_s)
            row["p50_8"].append(eight.p50_ms)
            row["unexpected"].append(one.unexpected(endpoint.status) + eight.unexpected(endpoint.status))
    return figures


def print_echo_table(figures: dict[str, dict[str, list[float]]], args: argparse.Namespace) -> None:
    print(f"\n`echo 9` per request, {args.requests} requests per measurement, {args.rounds} round(s) alternating; "
          "median (min–max) over rounds, ×ratio to webhook")
    print(f"{'':<24}{'1 client p50 ms':>26}{'1 client p95 ms':>26}{'8 clients req/s':>28}{'8 clients p50 ms':>26}"
          f"{'non-200':>9}")
    reference = figures["webhook"]
    for label, row in figures.items():
        cells = [f"{spread(row[key], 0 if key == 'rps_8' else 1)} {ratio(row[key], reference[key])}"
                 for key in ("p50_1", "p95_1", "rps_8", "p50_8")]
        print(f"{label:<24}{cells[0]:>26}{cells[1]:>26}{cells[2]:>28}{cells[3]:>26}{int(sum(row['unexpected'])):>9}")


def measure_startup(home: Path, starts: int) -> dict[str, list[float]]:
    seconds: dict[str, list[float]] = {"webhook": [], "responder": []}
    for attempt in range(starts):
        for name, start, path in (("webhook", start_webhook, "/"), ("responder", start_responder, "/health")):
            server = start(home / f"start-{name}-{attempt}")
            try:
                seconds[name].append(seconds_to_first_answer(server, path))
            finally:
                server.stop()
    return seconds


def measure_records(home: Path, targets: list[int], requests: int) -> None:
    # Retention above every target plus the jobs the measurement itself submits, so no record is pruned.
    retained = max(targets) + len(targets) * (requests + 10) + 1000
    responder = start_responder(home, jobs_retained=retained)
    try:
        seconds_to_first_answer(responder, "/health")
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        seed = Endpoint("seed", f"{responder.url}/jobs?wait=10", json.dumps(SEED_JOB).encode(), "application/json",
                        bearer)
        listing = Endpoint("GET /jobs", f"{responder.url}/jobs", headers=bearer, method="GET")
        submit = Endpoint("POST /jobs", f"{responder.url}/jobs", json.dumps(SEED_JOB).encode(), "application/json",
                          bearer, status=202)
        spool = home / "data" / "jobs"
        print(f"\njob records (jobs_retained = {retained}; {requests} requests each at 1 client; submits run "
              "in the background)")
        print(f"{'records':>9}{'seeded in s':>13}{'seed errors':>13}{'GET /jobs p50':>15}{'p95 ms':>9}"
              f"{'POST /jobs 202 p50':>20}{'p95 ms':>9}{'non-2xx':>9}  kept")
        for target in targets:
            missing = target - sum(1 for _ in spool.glob("*.json"))
            started = time.monotonic()
            # hey sends n - n % c requests: the remainder goes in a second, smaller batch.
            batches = [(missing - missing % 8, 8), (missing % 8, missing % 8)]
            seed_errors = sum(seed.hey(n, clients).unexpected(200) for n, clients in batches if n > 0)
            wait_until_idle(responder)
            seeding_s = time.monotonic() - started
            kept = sum(1 for _ in spool.glob("*.json"))
            status, body = Endpoint("", f"{responder.url}/jobs?limit=1000", headers=bearer, method="GET").fetch()
            listed = len(json.loads(body)["jobs"]) if status == 200 else f"HTTP {status}"
            read = listing.hey(requests, 1)
            written = submit.hey(requests, 1)
            wait_until_idle(responder)
            print(f"{target:>9}{seeding_s:>13.1f}{seed_errors:>13}{read.p50_ms:>15.1f}{read.p95_ms:>9.1f}"
                  f"{written.p50_ms:>20.1f}{written.p95_ms:>9.1f}{read.unexpected(200) + written.unexpected(202):>9}"
                  f"  {kept} job files in its spool; GET /jobs?limit=1000 lists {listed}")
    finally:
        responder.stop()


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: " + json.dumps(QUICK))
    parser.add_argument("--requests", type=int, help=f"requests per timed measurement ({FULL['requests']})")
    parser.add_argument("--rounds", type=int, help=f"alternating rounds ({FULL['rounds']})")
    parser.add_argument("--records", type=int, help=f"the large number of job records kept ({FULL['records']})")
    parser.add_argument("--record-requests", type=int,
                        help=f"requests per measurement with records kept ({FULL['record_requests']})")
    parser.add_argument("--jobs-for-rss", type=int, help=f"jobs before the second RSS reading ({FULL['jobs_for_rss']})")
    parser.add_argument("--starts", type=int, help=f"starts timed per server ({FULL['starts']})")
    args = parser.parse_args()
    for name, default in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    # hey sends n - n % c requests, so the counts run at 8 clients are rounded up to a multiple of 8.
    args.requests, args.jobs_for_rss = (-(-n // 8) * 8 for n in (args.requests, args.jobs_for_rss))
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
            responder = start_responder(home / "responder")
            servers.callback(responder.stop)
            seconds_to_first_answer(webhook, "/")
            seconds_to_first_answer(responder, "/health")
            with urllib.request.urlopen(f"{responder.url}/health") as answer:
                responder_version = json.load(answer)["version"]
            webhook_version = subprocess.run(["webhook", "-version"], capture_output=True,
                                             text=True).stdout.strip()
            print(header(webhook_version, responder_version), flush=True)
            endpoints = echo_endpoints(webhook, responder)
            for endpoint in endpoints:
                answer = answer_of_nine(endpoint)
                if answer.strip() != "9":
                    raise RuntimeError(f"{endpoint.label} answered {answer!r}, not 9")
                endpoint.hey(20, 2)  # warm-up
            print("each endpoint answered 9 on a sample request before the timed rounds")
            idle_rss = {"webhook": webhook.rss_mib(), "responder": responder.rss_mib()}
            print_echo_table(measure_echo(endpoints, args), args)
            loaded = {"webhook": endpoints[0].hey(args.jobs_for_rss, 8), "responder": endpoints[1].hey(
                args.jobs_for_rss, 8)}
            busy_rss = {"webhook": webhook.rss_mib(), "responder": responder.rss_mib()}
            print(f"\nRSS MiB (VmRSS)        idle after warm-up   after {args.jobs_for_rss} more requests at 8 clients")
            for name, server in (("webhook", webhook), ("responder", responder)):
                failed = loaded[name].unexpected(200)
                print(f"{name:<24}{idle_rss[name]:>16.1f}{busy_rss[name]:>16.1f}"
                      + (f"   ({failed} answers not 200)" if failed else ""))
        startup = measure_startup(home, args.starts)
        print(f"\nseconds from spawn to first 200, median (min–max) of {args.starts} starts")
        print(f"{'webhook GET /':<24}{spread(startup['webhook'], 3):>26}")
        print(f"{'responder GET /health':<24}{spread(startup['responder'], 3):>26} "
              f"{ratio(startup['responder'], startup['webhook'])}")
        measure_records(home / "records", sorted({100, args.records}), args.record_requests)
        print(f"\nbenchmark ran {time.monotonic() - began:.0f} s")
    except KeyboardInterrupt:
        print("\ninterrupted; every server it started is stopped", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
