"""moto's standalone server as its own process on a loopback port, and boto3 clients spoken to it over HTTP."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3

REGION = "us-east-1"
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


class MotoServer:
    """One moto server for every AWS service a test speaks to (S3, SQS, EC2, Auto Scaling, CloudFormation)."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.url = ""
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> MotoServer:
        with self.log_path.open("w") as output:
            self.process = subprocess.Popen(
                [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", "0"],
                stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not (match := re.search(r"Running on (http://127\.0\.0\.1:\d+)", self.log_path.read_text())):
            assert self.process.poll() is None and time.monotonic() < deadline, self.log_path.read_text()
            time.sleep(0.1)
        self.url = match.group(1)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)

    def reset(self) -> None:
        """Forget every resource of every service, so each test starts from an empty account."""
        request = urllib.request.Request(self.url + "/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=10).close()

    def client(self, service: str, region: str = REGION):
        return boto3.client(service, endpoint_url=self.url, region_name=region,
                            aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])

    def environment(self, scratch: Path, region: str = REGION) -> dict[str, str]:
        """The environment of a process that must reach this server and nothing else of AWS."""
        env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "SERVER_RESPONDER_"))}
        env.update(FAKE_CREDENTIALS, AWS_ENDPOINT_URL=self.url, AWS_DEFAULT_REGION=region,
                   AWS_CONFIG_FILE=str(scratch / "no-aws-config"),
                   AWS_SHARED_CREDENTIALS_FILE=str(scratch / "no-aws-credentials"),
                   AWS_EC2_METADATA_DISABLED="true")
        return env


def instance_state(ec2, instance_id: str) -> str:
    """What EC2 says of one instance: pending, running, stopping, stopped, terminated."""
    reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    return reservations[0]["Instances"][0]["State"]["Name"]
