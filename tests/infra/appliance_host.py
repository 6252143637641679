"""What the host tests know about a Server Responder box, and how they talk to it."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
TOKEN_FILE = f"{DATA_DIR}/api_token"
TLS_KEY = "/etc/nginx/tls/server.key"
TLS_CERTIFICATE = "/etc/nginx/tls/server.crt"
UNIT = "server-responder"
JOB_NETWORK_UNIT = "server-responder-job-network"
JOB_NETWORK_TABLE = "inet server_responder_jobs"
METADATA_ADDRESS = "169.254.169.254"
SECRET_NAMES = ("api_key", "code_secret", "admin_pass", "github_secret")

CLIENT_SOURCE = (Path(__file__).parent / "box_client.py").read_text()



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

    def job(self, script: str, language: str = "python") -> dict[str, Any]:
        answer = self.request("POST", "/jobs?wait=30", {"type": "script", "language": language, "script": script})
        assert answer.status == 200, answer.body
        return answer.body

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
