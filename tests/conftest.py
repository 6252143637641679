"""Shared fixtures: real responders started as processes on ephemeral loopback ports, moto's server for AWS."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from server_responder.jobs.containment import HostView, cgroup_places, data_dir_tag
from server_responder.jobs.runner import SHARED_WORK_ROOT
from tests.moto_server import MotoServer

REPO = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(r"listening on (http://\S+)")
# Seconds and tests per tier (the directory under tests/), for the summary at the end of a run.
_TIER_COST: dict[str, list[float]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    tier = report.nodeid.split("/")[1] if report.nodeid.startswith("tests/") else "other"
    cost = _TIER_COST.setdefault(tier, [0.0, 0])
    cost[0] += report.duration
    cost[1] += report.when == "call"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _TIER_COST:
        return
    terminalreporter.section("time per tier")
    for tier, (seconds, tests) in sorted(_TIER_COST.items(), key=lambda item: -item[1][0]):
        terminalreporter.write_line(f"{tier:<12} {tests:5d} tests {seconds:8.1f} s")


@dataclass
class HttpAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class RunningResponder:
    """A `server-responder serve` process and a small HTTP client for it."""

    data_dir: Path
    env: dict[str, str]
    process: subprocess.Popen | None = None
    url: str = ""
    output: list[str] = field(default_factory=list)
    # Run the service through this (for example setpriv, to start it as another user).
    command_prefix: list[str] = field(default_factory=list)
    # The port to listen on; 0 for any free one.
    port: int = 0

    @property
    def token(self) -> str:
        return self.env.get("SERVER_RESPONDER_API_KEY") or (self.data_dir / "api_token").read_text().strip()

    @property
    def log_file(self) -> Path:
        return Path(self.env["SERVER_RESPONDER_LOG_DIR"]) / "server-responder.log"

    def launcher_pid(self) -> int:
        """The service's child running the job launcher."""
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                if b"server_responder.jobs.launcher" in Path(f"/proc/{child}/cmdline").read_bytes():
                    return int(child)
        raise AssertionError("the service has no launcher")

    def start(self, timeout: float = 20) -> RunningResponder:
        self.process = subprocess.Popen(
            [*self.command_prefix, sys.executable, "-m", "server_responder", "serve", "--port", str(self.port)],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.output.append(line)
            match = _LISTENING.search(line)
            if match:
                self.url = match.group(1)
                return self
        self.stop()
        raise RuntimeError("responder did not start:\n" + "".join(self.output))

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        rest = self.process.stdout.read() if self.process.stdout else ""
        self.output.append(rest or "")
        code = self.process.returncode
        self.process = None
        if sig != signal.SIGKILL:
            # A killed service leaves its cgroups for its restart to find; a stopped one leaves nothing.
            self.remove_leftovers()
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def remove_leftovers(self) -> None:
        """Remove the empty cgroups and shared work dir a stopped service of this data dir leaves behind."""
        with contextlib.suppress(OSError):
            (SHARED_WORK_ROOT / data_dir_tag(self.data_dir)).rmdir()
        places = cgroup_places(HostView())
        for base in (places.unified_dir, *places.v1.values()):
            directory = base / data_dir_tag(self.data_dir) if base is not None else None
            if directory is None or not directory.is_dir():
                continue
            for child in directory.iterdir():
                if child.is_dir():
                    with contextlib.suppress(OSError):
                        child.rmdir()
            with contextlib.suppress(OSError):
                directory.rmdir()

    def peak_memory_growth(self, action: Callable[[], Any]) -> tuple[int, Any]:
        """How far the service's peak RSS (VmHWM) rose above its RSS while `action` ran, and what it returned."""
        status = Path(f"/proc/{self.process.pid}/status")

        def peak() -> int:
            line = next(line for line in status.read_text().splitlines() if line.startswith("VmHWM:"))
            return int(line.split()[1]) * 1024

        # Writing 5 to clear_refs starts VmHWM again from the current RSS (Linux 4.0 and later).
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")
        before = peak()
        outcome = action()
        return peak() - before, outcome

    def request(self, method: str, path: str, *, body: Any = None, data: bytes | None = None,
                headers: dict[str, str] | None = None, token: str | None | bool = True,
                timeout: float = 60) -> HttpAnswer:
        all_headers = dict(headers or {})
        if body is not None:
            data = json.dumps(body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        if token is True:
            all_headers["Authorization"] = f"Bearer {self.token}"
        elif isinstance(token, str):
            all_headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return HttpAnswer(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as error:
            return HttpAnswer(error.code, dict(error.headers), error.read())

    def submit(self, script: str, *, wait: float = 30, **fields: Any) -> dict[str, Any]:
        answer = self.request("POST", f"/jobs?wait={wait}", body={"script": script, **fields})
        assert answer.status in (200, 202), answer.body
        return answer.json()

    def wait_for(self, job_id: str, timeout: float = 30) -> dict[str, Any]:
        """The job once it has finished, whatever its final status."""
        return self._wait_for_job(job_id, lambda status: status not in ("queued", "running"), "finish", timeout)

    def wait_until_running(self, job_id: str, timeout: float = 30) -> dict[str, Any]:
        """The job once the service says it runs (or has already finished)."""
        return self._wait_for_job(job_id, lambda status: status != "queued", "start", timeout)

    def _wait_for_job(self, job_id: str, reached: Callable[[str], bool], what: str,
                      timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.request("GET", f"/jobs/{job_id}", token=False).json()
            if reached(job["status"]):
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} did not {what} in {timeout}s")


def responder_env(base: Path, **settings: Any) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("SERVER_RESPONDER_", "AWS_"))}
    env.update({
        "SERVER_RESPONDER_DATA_DIR": str(base / "data"),
        "SERVER_RESPONDER_LOG_DIR": str(base / "logs"),
        "SERVER_RESPONDER_STORE": str(base / "results"),
        "SERVER_RESPONDER_SYNC_WAIT_SECONDS": "10",
    })
    for key, value in settings.items():
        if isinstance(value, (dict, list)):
            value = json.dumps(value)
        env[f"SERVER_RESPONDER_{key.upper()}"] = str(value)
    return env


@pytest.fixture(autouse=True)
def _workspaces_reachable_by_jobs(request: pytest.FixtureRequest) -> None:
    """A root service runs jobs as nobody, who must reach their workspaces under tmp_path and may leave the
    files tests look for in it."""
    if os.geteuid() != 0 or "tmp_path" not in request.fixturenames:
        return
    path = request.getfixturevalue("tmp_path")
    path.chmod(0o1777)
    while path != path.parent and path != Path("/tmp"):
        path.chmod(path.stat().st_mode | 0o111)
        path = path.parent


@pytest.fixture
def make_responder(tmp_path: Path) -> Iterator:
    """Factory: `make_responder(workers=1, ...)` starts a responder with those settings."""
    started: list[RunningResponder] = []

    def make(start: bool = True, base: Path | None = None, **settings: Any) -> RunningResponder:
        home = base or tmp_path / f"responder-{len(started)}"
        home.mkdir(parents=True, exist_ok=True)
        responder = RunningResponder(home / "data", responder_env(home, **settings))
        started.append(responder)
        return responder.start() if start else responder

    yield make
    for responder in started:
        responder.stop()


@pytest.fixture
def responder(make_responder) -> RunningResponder:
    return make_responder()


@pytest.fixture(scope="module")
def moto(tmp_path_factory) -> Iterator[MotoServer]:
    """One moto server per test module; tests that need an empty account call its `reset()`."""
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def image_id(moto) -> str:
    # Listing moto's images takes seconds; any one of them will do for every test of a module.
    return moto.client("ec2").describe_images(Owners=["amazon"])["Images"][0]["ImageId"]


@pytest.fixture
def ec2(moto, image_id):
    """EC2 of an empty moto account."""
    moto.reset()
    return moto.client("ec2")


@pytest.fixture
def launch(ec2, image_id):
    """Start one instance in moto, with these tags; its id."""

    def run(tags: dict[str, str] | None = None) -> str:
        extra = {}
        if tags:
            extra["TagSpecifications"] = [{"ResourceType": "instance",
                                           "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
        return ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, **extra)["Instances"][0]["InstanceId"]

    return run


@pytest.fixture
def aws_env(moto, tmp_path):
    """The environment of a command that must reach moto's server and nothing else of AWS."""
    return moto.environment(tmp_path)


@pytest.fixture
def dead_address():
    """A loopback address nothing answers on: bound, never listening, so no other process can take the port."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    yield f"127.0.0.1:{holder.getsockname()[1]}"
    holder.close()
