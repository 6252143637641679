"""Jobs submitted through nginx over HTTPS, and what they can see."""

import json
import shlex
import time

import pytest

from appliance_host import (
    CONFIG_FILE, DATA_DIR, ENV_FILE, JOB_USER, LOG_DIR, METADATA_ADDRESS, SECRETS_DIR, SERVICE_USER, TOKEN_FILE,
)

NINE = {"python": "print(5 + 4)", "bash": "echo $((5 + 4))", "sh": "echo $((5 + 4))", "ruby": "puts 5 + 4",
        "node": "console.log(5 + 4)"}
READ_ATTEMPT = """
import json, os, sys
outcome = {}
for path in sys.argv[1:] or %r:
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            open(path, "rb").read(1)
        outcome[path] = "read"
    except PermissionError:
        outcome[path] = "denied"
    except FileNotFoundError:
        outcome[path] = "missing"
print(json.dumps(outcome))
"""

# Connects to the instance metadata service's address and says what happened.
METADATA_PROBE = f"""
import socket
probe = socket.socket()
probe.settimeout(5)
try:
    probe.connect(({METADATA_ADDRESS!r}, 80))
    print("connected")
except OSError as error:
    print(type(error).__name__)
"""
METADATA_STANDIN = f"""
import socket
server = socket.create_server(({METADATA_ADDRESS!r}, 80))
while True:
    server.accept()[0].close()
"""
STANDIN_UNIT = "server-responder-test-metadata"


def test_job_returns_its_output(appliance):
    job = appliance.job("print(5 + 4)")
    assert (job["status"], job["exit_status"], job["stdout"]) == ("succeeded", 0, "9\n")


def test_job_reports_a_failure(appliance):
    job = appliance.job("import sys; sys.exit(3)")
    assert (job["status"], job["exit_status"]) == ("failed", 3)


def test_every_configured_language_runs(appliance):
    languages = sorted(appliance.config()["languages"])
    outputs = {name: appliance.job_output(NINE[name], name) for name in languages}
    assert outputs == {name: "9\n" for name in languages}


def test_job_runs_as_the_job_user(appliance):
    assert appliance.job_output("import getpass; print(getpass.getuser())") == f"{JOB_USER}\n"


def test_job_environment_holds_no_aws_setting_or_token(appliance):
    environment = json.loads(appliance.job_output("import json, os; print(json.dumps(dict(os.environ)))"))
    token = appliance.token()
    leaked = [name for name, value in environment.items()
              if name.startswith(("AWS_", "SERVER_RESPONDER_")) or token in value]
    assert leaked == []


@pytest.mark.parametrize("kind", ["CapPrm", "CapEff", "CapAmb", "CapInh"])
def test_job_holds_no_capability(appliance, kind):
    status = appliance.job_output("print(open('/proc/self/status').read())")
    values = dict(line.split(":\t", 1) for line in status.splitlines() if line.startswith("Cap"))
    assert int(values[kind], 16) == 0


@pytest.mark.parametrize("path", [CONFIG_FILE, SECRETS_DIR, ENV_FILE, DATA_DIR, f"{DATA_DIR}/results", LOG_DIR,
                                  "/etc/nginx/tls/server.key"])
def test_job_cannot_read(appliance, path):
    outcome = json.loads(appliance.job_output(READ_ATTEMPT % ([path],)))
    assert outcome == {path: "denied"}


def test_job_cannot_read_the_token(appliance):
    # Missing when the token comes from user data: then there is nothing to read, which is what matters.
    outcome = json.loads(appliance.job_output(READ_ATTEMPT % ([TOKEN_FILE],)))
    assert outcome[TOKEN_FILE] in ("denied", "missing")


def test_job_output_never_shows_the_token(appliance):
    job = appliance.job("import os; print(os.listdir('.'))")
    assert appliance.token() not in json.dumps(job)


def test_job_is_logged_as_json(host, appliance):
    job = appliance.job("print('logged')")
    lines = host.check_output(f"grep -F {job['id']} {LOG_DIR}/server-responder.log").splitlines()
    assert lines and all(json.loads(line) for line in lines)


@pytest.fixture(scope="module")
def metadata_standin(host):
    """A listener at the metadata address on the box itself, so that no probe leaves the box."""
    host.run_expect([0], f"ip address add {METADATA_ADDRESS}/32 dev lo")
    try:
        standin = shlex.quote(METADATA_STANDIN)
        host.run_expect([0], f"systemd-run --quiet --collect --unit={STANDIN_UNIT} python3 -c {standin}")
        listening = host.socket(f"tcp://{METADATA_ADDRESS}:80")
        deadline = time.monotonic() + 10
        while not listening.is_listening and time.monotonic() < deadline:
            time.sleep(0.2)
        yield
    finally:
        host.run(f"systemctl stop {STANDIN_UNIT}")
        host.run(f"ip address del {METADATA_ADDRESS}/32 dev lo")


def test_job_cannot_reach_the_instance_metadata_service(appliance, metadata_standin):
    before = appliance.blocked_connections()
    assert appliance.job_output(METADATA_PROBE) == "ConnectionRefusedError\n"
    assert appliance.blocked_connections() > before


def test_service_user_still_reaches_the_instance_metadata_service(host, appliance, metadata_standin):
    before = appliance.blocked_connections()
    probe = host.run(f"runuser -u {SERVICE_USER} -- python3 -c {shlex.quote(METADATA_PROBE)}")
    assert probe.stdout == "connected\n"
    assert appliance.blocked_connections() == before
