"""Queue mode and Auto Scaling membership, with real responders on one SQS queue of moto's standalone server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from server_responder.fleet.messages import job_id_for_message

from tests.integration.test_lifecycle import gated, log_events, shutdown_recorder, wait_until

BUCKET = "fleet-results"
PREFIX = "fleet"
# Short, so a message whose box died reappears within seconds; the heartbeat keeps live jobs' messages hidden.
VISIBILITY = 6
QUEUE_MODE = {"store": f"s3://{BUCKET}/{PREFIX}", "queue_wait_seconds": 1, "queue_visibility_timeout": VISIBILITY,
              "queue_heartbeat_seconds": 1, "upload_retry_seconds": 0.5, "upload_retry_max_seconds": 2}


@pytest.fixture
def aws(moto):
    moto.reset()
    moto.client("s3").create_bucket(Bucket=BUCKET)
    return moto


@pytest.fixture
def sqs(aws):
    return aws.client("sqs")


def make_queue(sqs, name: str = "jobs", max_receive_count: int = 2) -> tuple[str, str]:
    """A job queue whose redrive policy moves a message received `max_receive_count` times to its dead-letter
    queue; both URLs."""
    dead = sqs.create_queue(QueueName=f"{name}-dead")["QueueUrl"]
    dead_arn = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(QueueName=name, Attributes={
        "VisibilityTimeout": str(VISIBILITY),
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dead_arn, "maxReceiveCount": str(max_receive_count)}),
    })["QueueUrl"]
    return url, dead


@pytest.fixture
def fleet_box(make_responder, aws, tmp_path):
    """Start a responder in queue mode, speaking to moto for S3, SQS and Auto Scaling."""

    def start(queue_url: str, **settings):
        responder = make_responder(start=False, queue_url=queue_url, **{**QUEUE_MODE, **settings})
        responder.env.update({key: value for key, value in aws.environment(tmp_path).items()
                              if key.startswith("AWS_")})
        return responder.start()

    return start


def send_jobs(sqs, queue_url: str, bodies: list[dict]) -> list[str]:
    """Send each body as a message, ten a call; the job ids, in order."""
    ids = []
    for start in range(0, len(bodies), 10):
        entries = [{"Id": str(n), "MessageBody": json.dumps(body)} for n, body in enumerate(bodies[start:start + 10])]
        answer = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        assert not answer.get("Failed"), answer
        by_entry = {entry["Id"]: entry["MessageId"] for entry in answer["Successful"]}
        ids.extend(job_id_for_message(by_entry[str(n)]) for n in range(len(entries)))
    return ids


def submit_with_cli(environment: dict[str, str], queue_url: str, script: str) -> str:
    """`server-responder submit --queue` of a sh script, as a user sends a job to the fleet; the job's id."""
    done = subprocess.run([sys.executable, "-m", "server_responder", "submit", "--queue", queue_url,
                           "--script", "-", "--language", "sh"],
                          input=script, capture_output=True, text=True, env=environment, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["job_id"]


def stored_results(s3) -> dict[str, dict]:
    """Every result document in the bucket, by job id."""
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{PREFIX}/results/"):
        for item in page.get("Contents", []):
            name = item["Key"].removeprefix(f"{PREFIX}/results/")
            if "/" not in name:
                found[name] = item["Key"]
    return found


def result(s3, job_id: str) -> dict:
    return json.loads(s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/results/{job_id}")["Body"].read())


def job_status(box, job_id: str) -> str | None:
    """The job's status on this box; None before the box has taken its message."""
    answer = box.request("GET", f"/jobs/{job_id}", token=False)
    return answer.json()["status"] if answer.status == 200 else None


def queue_counts(sqs, queue_url: str) -> tuple[int, int]:
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


def test_three_boxes_share_a_queue_and_lose_nothing_when_one_is_killed(fleet_box, aws, sqs, tmp_path):
    queue_url, _ = make_queue(sqs, max_receive_count=10)
    boxes = [fleet_box(queue_url, workers=2) for _ in range(3)]
    s3 = aws.client("s3")
    # Every tenth job waits for a gate, so the box to be killed is sure to die with jobs in hand.
    gate = tmp_path / "gate"

    def script(n: int) -> str:
        wait = f"while [ ! -e {gate} ]; do sleep 0.05; done\n" if n % 10 == 0 else ""
        return f"{wait}echo job-{n}\n"

    victim = boxes[1]
    # The boxes run jobs while the rest are still being sent, each by its own `submit --queue`.
    with ThreadPoolExecutor(4) as senders:
        sent = senders.map(lambda n: submit_with_cli(aws.environment(tmp_path), queue_url, script(n)), range(300))
        wait_until(lambda: victim.request("GET", "/last_job", token=False).json()["running_jobs"] == 2,
                   timeout=120, what="both of the victim's workers on gated jobs")
        victim.kill()
        # What the killed box held: the receipts of the messages it had taken and not yet deleted.
        in_flight = {path.stem for path in (victim.data_dir / "queue").glob("*.json")}
        gate.touch()
        job_ids = list(sent)

    wait_until(lambda: len(stored_results(s3)) == 300, timeout=120, what="every result")
    wait_until(lambda: queue_counts(sqs, queue_url) == (0, 0), timeout=30, what="every message deleted")
    assert set(stored_results(s3)) == set(job_ids)
    documents = {job_id: result(s3, job_id) for job_id in job_ids}
    for n, job_id in enumerate(job_ids):
        document = documents[job_id]
        assert document["status"] == "succeeded" and document["results"] == f"job-{n}\n", document
        assert document["queue_message_id"] and document["receive_count"] >= 1
    # Run twice: started on more than one box, or twice on one. Only what the killed box held may be, but for
    # one thing: moto's server can lose a deletion when two arrive at once (it rebuilds its list of messages
    # without a lock), and a message SQS said it deleted then comes back. Those are told apart by the box's
    # record of the deletion SQS confirmed, and are rare.
    starts = Counter(event["job_id"] for box in boxes for event in log_events(box, "job.started"))
    assert set(starts) == set(job_ids)
    run_twice = {job_id for job_id, count in starts.items() if count > 1}
    deletions = Counter(event["job_id"] for box in boxes for event in log_events(box, "queue.deleted"))
    deleted_yet_back = {job_id for job_id in run_twice if deletions[job_id] > 1}
    assert in_flight and run_twice - deleted_yet_back <= in_flight, (run_twice, deleted_yet_back, in_flight)
    assert len(deleted_yet_back) <= 10, deleted_yet_back
    # The run that wrote the result knows it was a redelivery.
    assert all(documents[job_id]["receive_count"] > 1 for job_id in run_twice)
    # Queue jobs count like any other on the boxes that ran them.
    for box in (boxes[0], boxes[2]):
        assert box.request("GET", "/last_job", token=False).json()["last_finished"] is not None
        listed = box.request("GET", "/jobs?limit=1000").json()["jobs"]
        assert {job["id"] for job in listed} <= set(job_ids) and listed
    assert boxes[0].request("GET", "/health", token=False).json()["queued_jobs"] == 0


def test_a_malformed_message_runs_nothing_and_ends_in_the_dead_letter_queue(fleet_box, sqs):
    queue_url, dead_url = make_queue(sqs, max_receive_count=2)
    box = fleet_box(queue_url, workers=1, queue_visibility_timeout=2)
    beyond_excerpt = "x" * 80 + "END-OF-BODY"
    bodies = [f"not json {box.token} {beyond_excerpt}", json.dumps({"script": 5, "padding": beyond_excerpt})]
    for body in bodies:
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)

    wait_until(lambda: queue_counts(sqs, dead_url)[0] == 2, timeout=40, what="both messages in the dead-letter queue")
    assert queue_counts(sqs, queue_url) == (0, 0)
    assert box.request("GET", "/jobs").json()["jobs"] == []
    assert box.request("GET", "/last_job", token=False).json()["last_started"] is None
    refused = log_events(box, "queue.invalid_message")
    # Each seen twice (maxReceiveCount), never deleted or run.
    assert sorted(event["receive_count"] for event in refused) == [1, 1, 2, 2]
    reasons = {event["reason"] for event in refused}
    assert "body: malformed JSON (Expecting value at position 0)" in reasons
    assert any(reason.startswith("padding: is not a field") for reason in reasons), reasons
    log_text = box.log_file.read_text()
    assert box.token not in log_text and "END-OF-BODY" not in log_text


def test_a_draining_box_receives_nothing_until_it_resumes(fleet_box, aws, sqs):
    queue_url, _ = make_queue(sqs)
    box = fleet_box(queue_url, workers=1)
    assert box.request("POST", "/drain").status == 200
    wait_until(lambda: log_events(box, "queue.paused"), timeout=10, what="receiving paused")
    [job_id] = send_jobs(sqs, queue_url, [{"script": "echo drained", "language": "sh"}])

    # Several long polls' worth: the message stays visible and nothing runs on the draining box.
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        assert queue_counts(sqs, queue_url) == (1, 0)
        assert box.request("GET", "/jobs").json()["jobs"] == []
        time.sleep(0.2)

    assert box.request("DELETE", "/drain").status == 200
    wait_until(lambda: job_id in stored_results(aws.client("s3")), timeout=30, what="the job run after resuming")
    assert result(aws.client("s3"), job_id)["results"] == "drained\n"


@pytest.fixture
def group(aws):
    """An Auto Scaling group of one moto instance: its name and the instance's id."""
    ec2, autoscaling = aws.client("ec2"), aws.client("autoscaling")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    ec2.create_launch_template(LaunchTemplateName="responder",
                               LaunchTemplateData={"ImageId": image, "InstanceType": "t3.micro"})
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="responders", MinSize=0, MaxSize=3, DesiredCapacity=1,
        LaunchTemplate={"LaunchTemplateName": "responder", "Version": "$Latest"}, AvailabilityZones=["us-east-1a"])
    [instance] = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["responders"])[
        "AutoScalingGroups"][0]["Instances"]
    return "responders", instance["InstanceId"]


def protected(autoscaling, instance_id: str) -> bool:
    [instance] = autoscaling.describe_auto_scaling_instances(InstanceIds=[instance_id])["AutoScalingInstances"]
    return instance["ProtectedFromScaleIn"]


def test_a_busy_box_is_protected_from_scale_in_and_unprotected_when_idle(fleet_box, aws, sqs, group, tmp_path):
    _, instance_id = group
    autoscaling = aws.client("autoscaling")
    queue_url, _ = make_queue(sqs)
    box = fleet_box(queue_url, workers=1, idle_action="leave-group", instance_id=instance_id)
    gate = tmp_path / "gate"
    [job_id] = send_jobs(sqs, queue_url, [{"script": gated(gate, "protected"), "timeout": 60}])

    wait_until(lambda: protected(autoscaling, instance_id), timeout=30, what="protection while the job runs")
    assert box.request("GET", "/health", token=False).json()["running_jobs"] == 1
    gate.touch()
    wait_until(lambda: job_id in stored_results(aws.client("s3")), timeout=30, what="the job's result")
    wait_until(lambda: not protected(autoscaling, instance_id), timeout=30, what="protection cleared when idle")
    assert [event["protected"] for event in log_events(box, "fleet.protection")] == [True, False]


def test_an_idle_box_leaves_its_group_and_the_group_shrinks(fleet_box, aws, sqs, group, tmp_path):
    group_name, instance_id = group
    autoscaling = aws.client("autoscaling")
    queue_url, _ = make_queue(sqs)
    marker = tmp_path / "powered-off"
    box = fleet_box(queue_url, workers=1, idle_action="leave-group", instance_id=instance_id,
                    shutdown_command=shutdown_recorder(marker), idle_shutdown_minutes=0.05,
                    idle_boot_grace_minutes=0, idle_check_seconds=0.2)

    def group_state() -> dict:
        return autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group_name])["AutoScalingGroups"][0]

    wait_until(lambda: group_state()["DesiredCapacity"] == 0, timeout=30, what="the group's desired capacity at 0")
    assert instance_id not in {instance["InstanceId"] for instance in group_state()["Instances"]}
    [done] = log_events(box, "idle.shutdown_done")
    assert done["detail"] == f"left Auto Scaling group {group_name}"
    assert not marker.exists()
    assert box.request("GET", "/last_job", token=False).json()["draining"] is True


def test_a_message_is_deleted_only_once_its_spooled_result_is_delivered_also_across_a_restart(fleet_box, aws, sqs):
    queue_url, _ = make_queue(sqs)
    late_bucket = "created-later"
    box = fleet_box(queue_url, workers=1, store=f"s3://{late_bucket}/{PREFIX}")
    [job_id] = send_jobs(sqs, queue_url, [{"script": "echo spooled", "language": "sh"}])
    wait_until(lambda: job_status(box, job_id) == "succeeded", timeout=30, what="the job run")
    assert log_events(box, "upload.failed")

    # Longer than the visibility timeout: the heartbeat keeps the message hidden while its result is spooled.
    deadline = time.monotonic() + VISIBILITY + 2
    while time.monotonic() < deadline:
        assert queue_counts(sqs, queue_url) == (0, 1)
        time.sleep(0.2)
    box.stop()
    assert (box.data_dir / "queue" / f"{job_id}.json").exists()
    box.start()
    wait_until(lambda: log_events(box, "queue.recovered"), timeout=10, what="the receipt taken up again")
    assert queue_counts(sqs, queue_url) == (0, 1)

    s3 = aws.client("s3")
    s3.create_bucket(Bucket=late_bucket)
    wait_until(lambda: queue_counts(sqs, queue_url) == (0, 0), timeout=30, what="the message deleted")
    stored = json.loads(s3.get_object(Bucket=late_bucket, Key=f"{PREFIX}/results/{job_id}")["Body"].read())
    assert stored["results"] == "spooled\n" and stored["receive_count"] == 1
    assert not (box.data_dir / "queue" / f"{job_id}.json").exists()
    assert len([e for e in log_events(box, "job.started") if e["job_id"] == job_id]) == 1


def test_a_job_interrupted_by_a_stop_gives_its_message_back_and_runs_again(fleet_box, aws, sqs, tmp_path):
    queue_url, _ = make_queue(sqs, max_receive_count=5)
    box = fleet_box(queue_url, workers=1)
    gate = tmp_path / "gate"
    [job_id] = send_jobs(sqs, queue_url, [{"script": gated(gate, "second run"), "timeout": 60}])
    wait_until(lambda: job_status(box, job_id) == "running", timeout=30, what="the job running")
    box.stop()
    # Given back at once by the stopping box, not after the visibility timeout.
    assert queue_counts(sqs, queue_url) == (1, 0)
    gate.touch()
    box.start()
    wait_until(lambda: queue_counts(sqs, queue_url) == (0, 0), timeout=30, what="the message deleted")
    stored = result(aws.client("s3"), job_id)
    assert stored["status"] == "succeeded" and stored["results"] == "second run\n" and stored["receive_count"] == 2


def test_a_box_whose_group_cannot_be_found_keeps_working_and_says_why(fleet_box, aws, sqs, tmp_path):
    queue_url, _ = make_queue(sqs)
    marker = tmp_path / "powered-off"
    box = fleet_box(queue_url, workers=1, idle_action="leave-group", instance_id="i-00000000000000000",
                    shutdown_command=shutdown_recorder(marker), idle_shutdown_minutes=0.05,
                    idle_boot_grace_minutes=0, idle_check_seconds=0.2)
    [job_id] = send_jobs(sqs, queue_url, [{"script": "echo alone", "language": "sh"}])
    wait_until(lambda: queue_counts(sqs, queue_url) == (0, 0), timeout=30, what="the job run and its message deleted")
    assert result(aws.client("s3"), job_id)["results"] == "alone\n"
    [missing, *_] = log_events(box, "fleet.no_group")
    assert missing["instance_id"] == "i-00000000000000000" and missing["retry_in_s"] > 0

    # Idle, it cannot leave a group it is not in: it says so, lifts its drain and goes on working.
    [failed] = wait_until(lambda: log_events(box, "idle.shutdown_failed"), timeout=30, what="the failed leave")
    assert "is in no Auto Scaling group" in failed["detail"]
    wait_until(lambda: box.request("GET", "/last_job", token=False).json()["draining"] is False, timeout=10,
               what="the drain lifted")
    [again] = send_jobs(sqs, queue_url, [{"script": "echo still working", "language": "sh"}])
    wait_until(lambda: queue_counts(sqs, queue_url) == (0, 0), timeout=30, what="a later job run")
    assert result(aws.client("s3"), again)["results"] == "still working\n"
    assert not marker.exists()
    assert box.request("GET", "/health", token=False).json()["status"] == "ok"
