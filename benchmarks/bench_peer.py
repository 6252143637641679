"""Job latency, throughput and memory of Server Responder beside adnanh's `webhook`, on loopback.

Both run the same trivial command (`echo 9`) per request and answer with its output. Prints figures;
asserts nothing. Usage: `.venv/bin/python benchmarks/bench_peer.py [--requests 200] [--concurrency 8]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_listening(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def memory_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def measure(send, requests: int, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []

    def one(_: int) -> None:
        started = time.perf_counter()
        send()
        latencies.append(time.perf_counter() - started)

    for n in range(5):
        one(n)
    latencies.clear()
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(requests)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))],
        "max_ms": 1000 * latencies[-1],
        "jobs_per_s": requests / elapsed,
    }


def start_responder(home: Path, workers: int) -> tuple[subprocess.Popen, int, str]:
    port = free_port()
    env = {**os.environ, "SERVER_RESPONDER_DATA_DIR": str(home / "data"), "SERVER_RESPONDER_LOG_DIR": str(home),
           "SERVER_RESPONDER_API_KEY": "benchmark-token", "SERVER_RESPONDER_WORKERS": str(workers)}
    process = subprocess.Popen([sys.executable, "-m", "server_responder", "serve", "--port", str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(port)
    return process, port, "benchmark-token"


def start_webhook(home: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    hooks = [{"id": "echo", "execute-command": "/bin/sh", "pass-arguments-to-command": [
        {"source": "string", "name": "-c"}, {"source": "string", "name": "echo 9"}],
        "include-command-output-in-response": True}]
    (home / "hooks.json").write_text(json.dumps(hooks))
    process = subprocess.Popen(["webhook", "-hooks", str(home / "hooks.json"), "-ip", "127.0.0.1", "-port",
                                str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(port)
    return process, port


def post(url: str, body: bytes, headers: dict[str, str], expect: bytes) -> None:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=60) as response:
        body = response.read()
        if expect not in body:
            raise RuntimeError(f"unexpected answer from {url}: {body[:300]!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="sr-bench-"))
    rows = []
    try:
        responder, port, token = start_responder(home, args.workers)
        job = json.dumps({"type": "script", "language": "sh", "script": "echo 9"}).encode()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        try:
            for concurrency in (1, args.concurrency):
                figures = measure(lambda: post(f"http://127.0.0.1:{port}/jobs?wait=30", job, headers, b'"9\\n"'),
                                  args.requests, concurrency)
                rows.append(("server-responder", concurrency, figures, memory_kib(responder.pid)))
        finally:
            responder.terminate()
            responder.wait()
        if shutil.which("webhook"):
            peer, peer_port = start_webhook(home)
            try:
                for concurrency in (1, args.concurrency):
                    figures = measure(lambda: post(f"http://127.0.0.1:{peer_port}/hooks/echo", b"", {}, b"9"),
                                      args.requests, concurrency)
                    rows.append(("webhook", concurrency, figures, memory_kib(peer.pid)))
            finally:
                peer.terminate()
                peer.wait()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(f"{args.requests} jobs of `echo 9` each, loopback, {os.cpu_count()} cores")
    print(f"{'server':<18}{'clients':>8}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'jobs/s':>9}{'RSS MiB':>9}{'peak MiB':>9}")
    for name, concurrency, figures, memory in rows:
        print(f"{name:<18}{concurrency:>8}{figures['p50_ms']:>9.1f}{figures['p95_ms']:>9.1f}{figures['max_ms']:>9.1f}"
              f"{figures['jobs_per_s']:>9.1f}{memory['VmRSS'] / 1024:>9.1f}{memory['VmHWM'] / 1024:>9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
