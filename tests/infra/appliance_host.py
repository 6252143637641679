"""What the host tests know about a Server Responder box, and how they talk to it."""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import shlex
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

SERVICE_USER = "server-responder"
JOB_USER = "server-responder-job"
INSTALL_DIR = "/opt/server-responder"
VENV = f"{INSTALL_DIR}/venv"
LOG_DIR = f"{INSTALL_DIR}/app/logs"
CONFIG_DIR = "/etc/server-responder"
CONFIG_FILE = f"{CONFIG_DIR}/config.toml"
SECRETS_DIR = f"{CONFIG_DIR}/secrets"
ENV_FILE = f"{CONFIG_DIR}/env"
DATA_DIR = "/var/lib/server-responder"
WORK_DIR = f"{DATA_DIR}/work"
TOKEN_FILE = f"{DATA_DIR}/api_token"
TLS_KEY = "/etc/nginx/tls/server.key"
TLS_CERTIFICATE = "/etc/nginx/tls/server.crt"
UNIT = "server-responder"
JOB_NETWORK_UNIT = "server-responder-job-network"
JOB_NETWORK_TABLE = "inet server_responder_jobs"
METADATA_ADDRESS = "169.254.169.254"
SECRET_NAMES = ("api_key", "code_secret", "admin_pass", "github_secret")

CLIENT_SOURCE = (Path(__file__).parent / "box_client.py").read_text()

# How the app contains jobs, as its /health, its job resources and its settings name it.
CONTAINMENT = "containment"             # in /health: {"kind", "limits", "job_user", "jobs_share_service_user"}
CGROUP_KIND_PREFIX = "cgroup2"          # kinds that give each job a cgroup: "cgroup2", "cgroup2-kill", with suffixes
MEMORY_LIMIT, PIDS_LIMIT = "memory_max", "pids_max"
LIMIT_VARIABLES = {MEMORY_LIMIT: "SERVER_RESPONDER_JOB_MEMORY_MAX", PIDS_LIMIT: "SERVER_RESPONDER_JOB_PIDS_MAX"}
OOM_KILLED, PEAK_MEMORY = "oom_killed", "peak_memory_bytes"
# Below the unit's delegated cgroup: the service's own, and one per job.
SERVICE_CGROUP, JOBS_CGROUP = "service", "jobs"
FINISHED = ("succeeded", "failed", "timed_out", "cancelled", "interrupted")

# Every live process (not a zombie) with the marker in an argument, but this probe and what started it.
FIND_PROCESSES = """
import json, os, sys
marker = sys.argv[1].encode()
probe, pid = set(), os.getpid()
while pid > 1:
    probe.add(pid)
    pid = int(open(f"/proc/{pid}/stat", "rb").read().rsplit(b")", 1)[1].split()[1])
found = []
for entry in filter(str.isdigit, os.listdir("/proc")):
    try:
        argv = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\\0")
        state = open(f"/proc/{entry}/stat", "rb").read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        continue
    if int(entry) not in probe and state != b"Z" and any(marker in arg for arg in argv):
        found.append(int(entry))
print(json.dumps(found))
"""
# Writes a file from base64 with its owner and mode, as a unit's EnvironmentFile expects.
WRITE_FILE = """
import base64, os, pwd, sys
path, owner, content = sys.argv[1], pwd.getpwnam(sys.argv[2]), base64.b64decode(sys.argv[3])
with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as sink:
    sink.write(content)
os.chown(path, owner.pw_uid, owner.pw_gid)
"""

T = TypeVar("T")


def wait_until(condition: Callable[[], T], seconds: float, what: str) -> T:
    """The first true value of condition, polled until the deadline; fails naming what never happened."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds:.0f} s: {what} (last: {value!r})")
        time.sleep(0.5)


def marker() -> str:
    """A sleep duration no other process on the box has: finds a job's processes by their argv."""
    return f"{600 + secrets.randbelow(100)}.{secrets.randbelow(10**6):06d}"



@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


class Appliance:
    """The box seen through testinfra: commands as root, requests through its own nginx."""

    def __init__(self, host: Any) -> None:
        self.host = host

    def request(self, method: str, path: str, body: Any = None, *, plain: bool = False,
                token: bool = True) -> Answer:
        args = [method, path] + ([json.dumps(body)] if body is not None else [])
        args += (["--plain"] if plain else []) + ([] if token else ["--no-token"])
        command = self.host.run("python3 -c " + " ".join(shlex.quote(arg) for arg in [CLIENT_SOURCE, *args]))
        assert command.rc == 0, command.stderr
        answer = json.loads(command.stdout)
        return Answer(answer["status"], answer["headers"], answer["body"])

    def request_of_size(self, method: str, path: str, body_bytes: int) -> Answer:
        """A request with a JSON body of this many bytes (too large for a command line)."""
        command = self.host.run("python3 -c " + " ".join(shlex.quote(arg) for arg in [
            CLIENT_SOURCE, method, path, f"--body-bytes={body_bytes}", "--no-token"]))
        assert command.rc == 0, command.stderr
        answer = json.loads(command.stdout)
        return Answer(answer["status"], answer["headers"], answer["body"])

    def follow(self, path: str, into: str) -> None:
        """Read an event stream through nginx in the background, each line written to the file `into` as it comes."""
        client = " ".join(shlex.quote(arg) for arg in [CLIENT_SOURCE, "GET", path, f"--stream={into}", "--no-token"])
        command = self.host.run(f"nohup python3 -c {client} >/dev/null 2>&1 &")
        assert command.rc == 0, command.stderr

    def job(self, script: str, language: str = "python", timeout: float | None = None,
            wait: int = 30) -> dict[str, Any]:
        """A job submitted and, with wait, waited for (up to that many seconds)."""
        body = {"type": "script", "language": language, "script": script}
        if timeout is not None:
            body["timeout"] = timeout
        answer = self.request("POST", f"/jobs?wait={wait}" if wait else "/jobs", body)
        assert answer.status in ((200,) if wait else (200, 201, 202)), answer.body
        return answer.body

    def job_state(self, job_id: str) -> dict[str, Any]:
        answer = self.request("GET", f"/jobs/{job_id}")
        assert answer.status == 200, answer.body
        return answer.body

    def finished_job(self, job_id: str, seconds: float) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            job = self.job_state(job_id)
            return job if job["status"] in FINISHED else None
        return wait_until(finished, seconds, f"job {job_id} finished")

    def health(self) -> dict[str, Any]:
        answer = self.request("GET", "/health")
        assert answer.status == 200, answer.body
        return answer.body

    def containment(self) -> dict[str, Any]:
        return self.health().get(CONTAINMENT) or {}

    def processes_with(self, mark: str) -> list[int]:
        """Live processes on the box that carry the marker in their argv."""
        return json.loads(self.host.check_output(f"python3 -c {shlex.quote(FIND_PROCESSES)} {shlex.quote(mark)}"))

    def wait_gone(self, mark: str, seconds: float, what: str) -> None:
        """Every process with the marker gone before the deadline; else fails showing who is still there."""
        try:
            wait_until(lambda: not self.processes_with(mark), seconds, what)
        except AssertionError as error:
            left = self.processes_with(mark)
            listing = self.host.run(f"ps -o pid,ppid,user,args -p {','.join(map(str, left))}").stdout if left else ""
            raise AssertionError(f"{error}; still running:\n{listing}") from None

    def cgroup2_mount(self) -> str:
        return self.host.check_output("findmnt -n -t cgroup2 -o TARGET").splitlines()[0]

    def cgroup_controllers(self) -> set[str]:
        """Controllers of the box's cgroup2 root: none in a container on a hybrid host, every one on a VM."""
        return set(self.host.check_output(f"cat {self.cgroup2_mount()}/cgroup.controllers").split())

    def unit_cgroup(self) -> str:
        """The service unit's cgroup, as a path below the cgroup2 mount."""
        return self.host.check_output(f"systemctl show -p ControlGroup --value {UNIT}")

    def cgroup_of(self, pid: int) -> str:
        lines = self.host.file(f"/proc/{pid}/cgroup").content_string.splitlines()
        return next(line[3:] for line in lines if line.startswith("0::"))

    def service_answers(self, not_pid: int | None = None) -> bool:
        """The service is up (another process than not_pid, if given) and its /health answers."""
        pid = int(self.host.check_output(f"systemctl show -p MainPID --value {UNIT}"))
        return pid > 0 and pid != not_pid and self.request("GET", "/health").status == 200

    def restart_service(self) -> None:
        # The tests' own restarts must not count against the unit's start rate limit.
        self.host.run(f"systemctl reset-failed {UNIT}")
        self.host.run_expect([0], f"systemctl restart {UNIT}")
        wait_until(self.service_answers, 60, f"{UNIT} answers after a restart")

    @contextlib.contextmanager
    def boot_settings(self, settings: dict[str, str]) -> Iterator[None]:
        """The service restarted with these SERVER_RESPONDER_* variables in the boot-time env file, which is
        put back as it was (or removed again) afterwards."""
        env_file = self.host.file(ENV_FILE)
        before = env_file.content_string if env_file.exists else None
        kept = [line for line in (before or "").splitlines() if line.split("=", 1)[0].strip() not in settings]
        self._write_env_file("\n".join(kept + [f"{name}={value}" for name, value in settings.items()]) + "\n")
        try:
            self.restart_service()
            yield
        finally:
            if before is None:
                self.host.run_expect([0], f"rm -f {ENV_FILE}")
            else:
                self._write_env_file(before)
            self.restart_service()

    def _write_env_file(self, content: str) -> None:
        encoded = base64.b64encode(content.encode()).decode()
        self.host.run_expect([0], f"python3 -c {shlex.quote(WRITE_FILE)} {ENV_FILE} {SERVICE_USER} {encoded}")

    def job_output(self, script: str, language: str = "python") -> str:
        job = self.job(script, language)
        assert job["status"] == "succeeded", job
        return job["stdout"]

    def token(self) -> str:
        command = self.host.run("python3 -c " + shlex.quote(CLIENT_SOURCE) + " --print-token")
        assert command.rc == 0, command.stderr
        return command.stdout.strip()

    def config(self) -> dict[str, Any]:
        script = f"import json, tomllib; print(json.dumps(tomllib.load(open({CONFIG_FILE!r}, 'rb'))))"
        command = self.host.run("python3 -c " + shlex.quote(script))
        assert command.rc == 0, command.stderr
        return json.loads(command.stdout)

    def service_pid(self) -> int:
        pid = int(self.host.check_output(f"systemctl show -p MainPID --value {UNIT}"))
        assert pid > 0, f"{UNIT} is not running"
        return pid

    def blocked_connections(self) -> int:
        """Packets the job user's network rules have stopped so far."""
        listing = json.loads(self.host.check_output(f"nft --json list table {JOB_NETWORK_TABLE}"))
        return sum(expression["counter"]["packets"] for entry in listing["nftables"] if "rule" in entry
                   for expression in entry["rule"]["expr"] if "counter" in expression)

    def can_read_as_job_user(self, path: str) -> bool:
        return self.host.run(f"runuser -u {JOB_USER} -- test -r {shlex.quote(path)}").rc == 0

    def secret_files(self) -> list[str]:
        """Every file that holds a secret: generated token, boot-time env file, secrets written by the role."""
        found = self.host.run(f"find {TOKEN_FILE} {ENV_FILE} {SECRETS_DIR} -maxdepth 1 -type f 2>/dev/null")
        return found.stdout.split()
