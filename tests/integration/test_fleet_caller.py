"""The fleet from the caller's side against moto's standalone server: `wake` stopped instances, whose
responders are real ones on loopback, `submit --wake-instance-id`, and `submit --queue` with and without
waiting for the result document in the fleet's bucket."""

import json
import socket
import subprocess
import sys
import time

import pytest

from server_responder.fleet.messages import job_id_for_message
from server_responder.jobs.record import Job
from server_responder.results.s3 import S3Location, S3ResultStore
from server_responder.results.store import put_json
from tests.moto_server import instance_state as state_of

BUCKET = "fleet-results"
STORE = f"s3://{BUCKET}/fleet"
TAG = "server-responder-fleet"


@pytest.fixture
def stopped_instance(ec2, launch):
    """Start one instance in moto, with these tags, and stop it; its id."""

    def make(tags: dict[str, str] | None = None) -> str:
        instance_id = launch(tags)
        ec2.stop_instances(InstanceIds=[instance_id])
        assert state_of(ec2, instance_id) == "stopped"
        return instance_id

    return make


@pytest.fixture
def queue_url(moto) -> str:
    moto.reset()
    return moto.client("sqs").create_queue(QueueName="fleet-jobs")["QueueUrl"]


@pytest.fixture
def bucket(moto, queue_url) -> str:
    moto.client("s3").create_bucket(Bucket=BUCKET)
    return BUCKET


def cli(*args: str, env: dict[str, str], stdin: str = "", timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server_responder", *args], input=stdin, env=env,
                          capture_output=True, text=True, timeout=timeout)


def reach(instance_id: str, responder) -> list[str]:
    return ["--scheme", "http", "--address-override", f"{instance_id}={responder.url.removeprefix('http://')}"]


def lines(stdout: str) -> dict[str, dict]:
    found = [json.loads(line) for line in stdout.splitlines()]
    return {line["id"]: line for line in found}


def test_wake_starts_a_stopped_instance_and_reports_it_ready_at_its_responder(ec2, stopped_instance, aws_env,
                                                                             make_responder):
    box = make_responder()
    instance_id = stopped_instance({TAG: "box"})

    done = cli("wake", "--instance-id", instance_id, "--ready-timeout", "60", *reach(instance_id, box), env=aws_env)

    assert done.returncode == 0, done.stderr
    report = lines(done.stdout)[instance_id]
    assert report["ready"] is True and report["state"] == "running"
    assert report["url"] == box.url
    assert report["status"] == "ok" and report["accepting"] is True
    assert 0 <= report["seconds"] < 60
    assert state_of(ec2, instance_id) == "running"


def test_wake_waits_until_the_responder_answers(ec2, stopped_instance, aws_env, make_responder):
    box = make_responder(start=False)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        box.port = probe.getsockname()[1]
    instance_id = stopped_instance()
    waking = subprocess.Popen(
        [sys.executable, "-m", "server_responder", "wake", "--instance-id", instance_id, "--ready-timeout", "120",
         "--scheme", "http", "--address-override", f"{instance_id}=127.0.0.1:{box.port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=aws_env)
    deadline = time.monotonic() + 60
    while state_of(ec2, instance_id) != "running":
        assert time.monotonic() < deadline and waking.poll() is None, waking.communicate()
        time.sleep(0.1)
    # EC2 says running, but nothing answers at the box's address yet: not ready.
    assert waking.poll() is None
    box.start()

    stdout, stderr = waking.communicate(timeout=120)

    assert waking.returncode == 0, stderr
    report = lines(stdout)[instance_id]
    assert report["ready"] is True and report["url"] == box.url == f"http://127.0.0.1:{box.port}"
    assert report["seconds"] > 0


def test_wake_is_not_ready_while_nothing_answers_at_the_address(ec2, stopped_instance, aws_env, dead_address):
    instance_id = stopped_instance()

    done = cli("wake", "--instance-id", instance_id, "--ready-timeout", "2", "--scheme", "http",
               "--address-override", f"{instance_id}={dead_address}", env=aws_env)

    assert done.returncode == 1
    report = lines(done.stdout)[instance_id]
    assert report["ready"] is False and report["state"] == "running"
    assert "/health" in report["error"] and "not ready after 2 s" in report["error"]
    assert f"{instance_id} did not wake" in done.stderr
    # EC2 was asked all the same: the box is starting, a later wake finds it running.
    assert state_of(ec2, instance_id) == "running"


def test_wake_by_tag_starts_every_tagged_instance_and_no_other(ec2, stopped_instance, aws_env, make_responder):
    first, second = make_responder(), make_responder()
    first_id, second_id = stopped_instance({TAG: "blue"}), stopped_instance({TAG: "blue"})
    other_colour, untagged = stopped_instance({TAG: "green"}), stopped_instance()

    done = cli("wake", "--tag-key", TAG, "--tag-value", "blue", *reach(first_id, first),
               "--address-override", f"{second_id}={second.url.removeprefix('http://')}", env=aws_env)

    assert done.returncode == 0, done.stderr
    reports = lines(done.stdout)
    assert set(reports) == {first_id, second_id}
    assert reports[first_id]["url"] == first.url and reports[second_id]["url"] == second.url
    assert all(report["ready"] for report in reports.values())
    assert state_of(ec2, other_colour) == "stopped" and state_of(ec2, untagged) == "stopped"


def test_wake_names_what_it_cannot_wake(ec2, stopped_instance, aws_env):
    gone = stopped_instance()
    ec2.terminate_instances(InstanceIds=[gone])

    terminated = cli("wake", "--instance-id", gone, "--ready-timeout", "30", env=aws_env)
    unknown = cli("wake", "--instance-id", "i-0123456789abcdef0", "--ready-timeout", "30", env=aws_env)
    untagged = cli("wake", "--tag-key", "nothing-has-this-tag", env=aws_env)
    malformed = cli("wake", "--instance-id", gone, "--address-override", "nonsense", env=aws_env)

    assert terminated.returncode == 1 and "terminated and cannot be started" in terminated.stderr
    assert lines(terminated.stdout)[gone]["ready"] is False
    assert unknown.returncode == 1 and "no such instance" in unknown.stderr and unknown.stdout == ""
    assert untagged.returncode == 1 and "no instance tagged nothing-has-this-tag" in untagged.stderr
    assert malformed.returncode == 2 and "--address-override" in malformed.stderr
    for done in (terminated, unknown, untagged, malformed):
        assert "Traceback" not in done.stderr


def test_submit_wake_instance_id_wakes_the_box_then_returns_the_jobs_output(ec2, stopped_instance, aws_env,
                                                                           make_responder):
    box = make_responder()
    instance_id = stopped_instance()
    env = {**aws_env, "SERVER_RESPONDER_API_KEY": box.token}

    done = cli("submit", "--wake-instance-id", instance_id, *reach(instance_id, box), "--script", "-",
               stdin="import sys\nprint('woken and working')\nprint('on stderr', file=sys.stderr)\nsys.exit(3)\n",
               env=env)

    assert done.returncode == 3, done.stderr
    assert done.stdout == "woken and working\n"
    assert "on stderr\n" in done.stderr and f"{instance_id} ready at {box.url}" in done.stderr
    assert state_of(ec2, instance_id) == "running"


def test_submit_wake_instance_id_runs_nothing_when_the_box_does_not_wake(ec2, stopped_instance, aws_env):
    gone = stopped_instance()
    ec2.terminate_instances(InstanceIds=[gone])

    done = cli("submit", "--wake-instance-id", gone, "--script", "-", stdin="print('never')\n",
               env={**aws_env, "SERVER_RESPONDER_API_KEY": "unused"})

    assert done.returncode == 1 and f"{gone} did not wake" in done.stderr and done.stdout == ""


def test_submit_queue_sends_the_job_request_as_the_message_body(moto, queue_url, aws_env, responder, tmp_path):
    script = tmp_path / "job.py"
    script.write_text("import os\nprint('from the queue', os.environ['GREETING'])\n")

    done = cli("submit", "--queue", queue_url, "--store", STORE, "--script", str(script), "--timeout", "30",
               "--env", "GREETING=hello", env=aws_env)

    assert done.returncode == 0, done.stderr
    queued = json.loads(done.stdout)
    messages = moto.client("sqs").receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    assert len(messages) == 1
    message = messages[0]
    assert queued["message_id"] == message["MessageId"]
    assert queued["job_id"] == job_id_for_message(message["MessageId"])
    assert queued["queue_url"] == queue_url and queued["store"] == STORE
    assert queued["results_location"] == f"results/{queued['job_id']}"
    assert queued["result_url"] == f"{STORE}/results/{queued['job_id']}"
    request = json.loads(message["Body"])
    assert request == {"type": "script", "language": "python", "script": script.read_text(), "timeout": 30.0,
                       "env": {"GREETING": "hello"}}
    # The body is a job request as POST /jobs takes it: a responder runs it as it stands.
    answer = responder.request("POST", "/jobs?wait=30", data=message["Body"].encode(),
                               headers={"Content-Type": "application/json"})
    assert answer.status == 200, answer.body
    assert answer.json()["stdout"] == "from the queue hello\n"


def test_submit_queue_keeps_a_chosen_results_location(moto, queue_url, aws_env):
    done = cli("submit", "--queue", queue_url, "--store", STORE, "--script", "-", "--results-location",
               "reports/nightly", stdin="print(1)\n", env=aws_env)

    assert done.returncode == 0, done.stderr
    queued = json.loads(done.stdout)
    assert queued["results_location"] == "reports/nightly"
    assert queued["result_url"] == f"{STORE}/reports/nightly"
    body = json.loads(moto.client("sqs").receive_message(QueueUrl=queue_url)["Messages"][0]["Body"])
    assert body["results_location"] == "reports/nightly"


def write_result(moto, job_id: str, location: str, **fields) -> None:
    """A result document in the fleet's bucket, written as a box's job service writes it."""
    store = S3ResultStore(S3Location.parse(STORE), client=moto.client("s3"))
    job = Job(id=job_id, type="script", spec={}, results_location=location, **fields)
    put_json(store, location, job.result_document())


def test_submit_queue_wait_prints_the_output_once_the_result_document_is_stored(moto, queue_url, bucket, aws_env,
                                                                               tmp_path):
    script = tmp_path / "job.py"
    script.write_text("print('run by some box')\n")
    waiting = subprocess.Popen(
        [sys.executable, "-m", "server_responder", "submit", "--queue", queue_url, "--store", STORE,
         "--wait", "60", "--script", str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=aws_env)
    queued = json.loads(waiting.stdout.readline())
    job_id, location = queued["job_id"], queued["results_location"]
    message = moto.client("sqs").receive_message(QueueUrl=queue_url)["Messages"][0]
    assert job_id == job_id_for_message(message["MessageId"])
    # Another job's document at the location, and a run cut short by a dying box, are not this job's result.
    write_result(moto, "f" * 40, location, status="succeeded", exit_status=0, stdout="someone else's\n")
    write_result(moto, job_id, location, status="interrupted", error="the service stopped while this job was running")
    assert waiting.poll() is None
    write_result(moto, job_id, location, status="failed", exit_status=4, stdout="run by some box\n",
                 stderr="and it failed\n")

    stdout, stderr = waiting.communicate(timeout=60)

    assert waiting.returncode == 4, stderr
    assert stdout == "run by some box\n"
    assert stderr == f"and it failed\nserver-responder submit: job {job_id} failed (exit status 4)\n"


def test_submit_queue_wait_gives_up_at_the_deadline(moto, queue_url, bucket, aws_env):
    began = time.monotonic()
    done = cli("submit", "--queue", queue_url, "--store", STORE, "--wait", "1.5", "--script", "-",
               stdin="print(1)\n", env=aws_env)

    assert done.returncode == 124
    job_id = json.loads(done.stdout)["job_id"]
    assert f"no result for job {job_id} at results/{job_id} in {STORE} after 1.5 s" in done.stderr
    assert time.monotonic() - began >= 1.5


def test_submit_queue_refusals_are_clear(moto, queue_url, aws_env):
    missing = cli("submit", "--queue", queue_url.replace("fleet-jobs", "no-such-queue"), "--script", "-",
                  stdin="print(1)\n", env=aws_env)
    wait_alone = cli("submit", "--wait", "5", "--script", "-", stdin="print(1)\n", env=aws_env)
    both = cli("submit", "--queue", queue_url, "--wake-instance-id", "i-0abc", "--script", "-", stdin="print(1)\n",
               env=aws_env)

    assert missing.returncode == 1 and "the queue did not take the job" in missing.stderr and missing.stdout == ""
    assert wait_alone.returncode == 2 and "--wait and --store go with --queue" in wait_alone.stderr
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    for done in (missing, wait_alone, both):
        assert "Traceback" not in done.stderr
