"""The fleet's CloudFormation template: clean for cfn-lint, and deployed into moto's CloudFormation.

moto's CloudFormation creates the queues, the bucket, the role and its instance profile, the launch template
and the group, and skips what it does not model (it warns): the bucket policy, the scaling policies and the
alarm. Of the bucket it applies the encryption, not the public access block nor the lifecycle rule; those
are checked in the template itself, as cfn-lint reads it against CloudFormation's own schemas.
"""

import ast
import base64
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "deploy" / "fleet.yaml"
STACK = "fleet-under-test"


class CloudFormationLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (!Ref, !Sub, ...) read as plain values."""


CloudFormationLoader.add_multi_constructor("!", lambda loader, suffix, node: (
    loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else
    loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode) else loader.construct_mapping(node)))


def template() -> dict:
    return yaml.load(TEMPLATE.read_text(), Loader=CloudFormationLoader)


def test_cfn_lint_finds_nothing():
    done = subprocess.run([str(Path(sys.executable).parent / "cfn-lint"), str(TEMPLATE)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and done.stdout == "", done.stdout + done.stderr


def test_the_bucket_is_private_and_expires_results_below_the_store_prefix():
    bucket = template()["Resources"]["ResultsBucket"]["Properties"]
    assert bucket["PublicAccessBlockConfiguration"] == {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                                                        "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    rule = bucket["LifecycleConfiguration"]["Rules"][0]
    assert rule["Status"] == "Enabled" and rule["Prefix"] == "${ResultsPrefix}/"
    assert rule["ExpirationInDays"] == "ResultsExpiryDays"


def test_the_group_scales_on_backlog_per_instance_by_metric_math():
    resources = template()["Resources"]
    tracking = resources["BacklogPerInstancePolicy"]["Properties"]["TargetTrackingConfiguration"]
    metrics = {metric["Id"]: metric for metric in tracking["CustomizedMetricSpecification"]["Metrics"]}
    assert metrics["m1"]["MetricStat"]["Metric"]["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert metrics["m2"]["MetricStat"]["Metric"]["MetricName"] == "GroupInServiceInstances"
    assert metrics["e1"]["Expression"] == "m1 / m2" and metrics["e1"]["ReturnData"] is True
    assert tracking["TargetValue"] == "BacklogPerInstance"
    collected = resources["AutoScalingGroup"]["Properties"]["MetricsCollection"][0]["Metrics"]
    assert "GroupInServiceInstances" in collected


@pytest.fixture(scope="module")
def stack(moto, image_id) -> dict[str, dict[str, str]]:
    """The template deployed into moto: its outputs and its resources' physical ids."""
    ec2 = moto.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.40.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="fleet-boxes", Description="fleet boxes", VpcId=vpc)["GroupId"]
    parameters = {"ImageId": image_id, "SubnetIds": subnet, "SecurityGroupIds": group, "MaxSize": "6",
                  "MaxReceiveCount": "2", "VisibilityTimeoutSeconds": "90", "ResultsPrefix": "jobs"}
    cloudformation = moto.client("cloudformation")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cloudformation.create_stack(
            StackName=STACK, TemplateBody=TEMPLATE.read_text(), Capabilities=["CAPABILITY_IAM"],
            Parameters=[{"ParameterKey": key, "ParameterValue": value} for key, value in parameters.items()])
    described = cloudformation.describe_stacks(StackName=STACK)["Stacks"][0]
    assert described["StackStatus"] == "CREATE_COMPLETE", described.get("StackStatusReason")
    resources = cloudformation.list_stack_resources(StackName=STACK)["StackResourceSummaries"]
    return {"outputs": {output["OutputKey"]: output["OutputValue"] for output in described["Outputs"]},
            "resources": {resource["LogicalResourceId"]: resource["PhysicalResourceId"] for resource in resources}}


def test_the_queue_sends_what_never_finishes_to_the_dead_letter_queue(moto, stack):
    sqs = moto.client("sqs")
    queue, dead_letters = stack["outputs"]["QueueUrl"], stack["outputs"]["DeadLetterQueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    dead_letter_arn = sqs.get_queue_attributes(QueueUrl=dead_letters,
                                               AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    assert json.loads(attributes["RedrivePolicy"]) == {"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": 2}
    assert attributes["VisibilityTimeout"] == "90" and attributes["ReceiveMessageWaitTimeSeconds"] == "20"
    assert attributes["SqsManagedSseEnabled"] == "true"

    sqs.send_message(QueueUrl=queue, MessageBody='{"script": "print(1)"}')
    for _ in range(2):
        # A box that received the message and died: it is visible again at once, as after the timeout.
        message = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1)["Messages"][0]
        sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
    assert "Messages" not in sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1)
    moved = sqs.receive_message(QueueUrl=dead_letters, WaitTimeSeconds=1)["Messages"]
    assert [message["Body"] for message in moved] == ['{"script": "print(1)"}']


def test_the_bucket_is_encrypted_and_named_in_the_store_output(moto, stack):
    bucket = stack["outputs"]["ResultsBucket"]
    encryption = moto.client("s3").get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    assert encryption["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert stack["outputs"]["Store"] == f"s3://{bucket}/jobs"


def test_boxes_boot_into_queue_mode_with_imdsv2_and_the_fleets_role(moto, stack):
    ec2, iam = moto.client("ec2"), moto.client("iam")
    data = ec2.describe_launch_template_versions(
        LaunchTemplateId=stack["resources"]["LaunchTemplate"])["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    cloud_config = yaml.safe_load(base64.b64decode(data["UserData"]))
    env_file = next(entry for entry in cloud_config["write_files"] if entry["path"] == "/etc/server-responder/env")
    settings = dict(line.split("=", 1) for line in env_file["content"].splitlines())
    assert settings["SERVER_RESPONDER_QUEUE_URL"] == stack["outputs"]["QueueUrl"]
    assert settings["SERVER_RESPONDER_STORE"] == stack["outputs"]["Store"]
    assert settings["SERVER_RESPONDER_IDLE_ACTION"] == "leave-group"
    assert env_file["permissions"] == "0600"
    profile = iam.get_instance_profile(InstanceProfileName=stack["resources"]["InstanceProfile"])["InstanceProfile"]
    assert data["IamInstanceProfile"]["Arn"] == profile["Arn"]
    assert [role["RoleName"] for role in profile["Roles"]] == [stack["resources"]["InstanceRole"]]


def test_the_role_grants_the_queue_the_results_prefix_and_its_own_group_only(moto, stack):
    iam, sqs = moto.client("iam"), moto.client("sqs")
    role = stack["resources"]["InstanceRole"]
    statements = [statement for name in iam.list_role_policies(RoleName=role)["PolicyNames"]
                  for statement in _document(iam.get_role_policy(RoleName=role, PolicyName=name))["Statement"]]
    granted = {action: statement for statement in statements for action in _listed(statement["Action"])}
    queue_arn = sqs.get_queue_attributes(QueueUrl=stack["outputs"]["QueueUrl"],
                                         AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"):
        assert granted[action]["Resource"] == queue_arn
    bucket = stack["outputs"]["ResultsBucket"]
    assert granted["s3:PutObject"]["Resource"] == granted["s3:GetObject"]["Resource"] == f"arn:aws:s3:::{bucket}/jobs/*"
    for action in ("autoscaling:SetInstanceProtection", "autoscaling:TerminateInstanceInAutoScalingGroup"):
        assert granted[action]["Condition"] == {"StringEquals": {"aws:ResourceTag/server-responder-fleet": STACK}}
    assert not any(action.endswith("*") for action in granted)
    assert all(statement["Effect"] == "Allow" for statement in statements)


def test_the_group_starts_empty_and_carries_the_tag_the_role_names(moto, stack):
    group = moto.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[stack["outputs"]["AutoScalingGroupName"]])["AutoScalingGroups"][0]
    assert (group["MinSize"], group["MaxSize"], group["DesiredCapacity"]) == (0, 6, 0)
    assert group["LaunchTemplate"]["LaunchTemplateId"] == stack["resources"]["LaunchTemplate"]
    tags = {tag["Key"]: (tag["Value"], tag["PropagateAtLaunch"]) for tag in group["Tags"]}
    assert tags["server-responder-fleet"] == (STACK, True)


def _document(answer: dict) -> dict:
    document = answer["PolicyDocument"]
    if isinstance(document, dict):
        return document
    # moto's server answers with the document as Python's repr of it rather than as JSON.
    return ast.literal_eval(document)


def _listed(value) -> list[str]:
    return value if isinstance(value, list) else [value]


def test_the_outputs_are_what_submit_takes(moto, stack, tmp_path):
    outputs = stack["outputs"]
    done = subprocess.run([sys.executable, "-m", "server_responder", "submit", "--queue", outputs["QueueUrl"],
                           "--store", outputs["Store"], "--script", "-"], input="print('to the fleet')\n",
                          env=moto.environment(tmp_path), capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    queued = json.loads(done.stdout)
    assert queued["result_url"] == f"s3://{outputs['ResultsBucket']}/jobs/results/{queued['job_id']}"
    message = moto.client("sqs").receive_message(QueueUrl=outputs["QueueUrl"], WaitTimeSeconds=1)["Messages"][0]
    assert json.loads(message["Body"])["script"] == "print('to the fleet')\n"
