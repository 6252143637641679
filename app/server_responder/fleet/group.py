"""The box as a member of an EC2 Auto Scaling group: protected from scale-in while it works, and leaving the
group by itself when idle, so the group shrinks by this box and no busy one.

Every AWS call here may fail (throttling, a network blip, a missing permission): the failure is logged and the
call is tried again later; none of them ever stops the service.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("server_responder.fleet")

IMDS = "http://169.254.169.254"
IMDS_TIMEOUT_SECONDS = 2.0
# A failed call is tried again after this long, doubling up to the maximum.
RETRY_SECONDS = 5.0
RETRY_MAX_SECONDS = 300.0


def aws_errors() -> tuple[type[BaseException], ...]:
    """What a failed AWS call raises; looked up only when something was raised (botocore is slow to import)."""
    from botocore.exceptions import BotoCoreError, ClientError

    return BotoCoreError, ClientError


def aws_client(service: str) -> Any:
    """A boto3 client from the standard chain (credentials, region, endpoint), with a few quick retries inline;
    the callers retry for longer themselves. Imported when first needed: boto3 is slow to import."""
    import boto3
    from botocore.config import Config

    # Longer than the longest long poll (20 s), so a receive is never cut short.
    return boto3.client(service, config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5,
                                               read_timeout=30))


class GroupUnavailable(RuntimeError):
    """This box's instance id or group could not be learnt (yet)."""


def instance_id_from_metadata(base: str = IMDS, timeout: float = IMDS_TIMEOUT_SECONDS) -> str:
    """This instance's id from the instance metadata service, with an IMDSv2 session token."""
    import urllib.request

    # Never through a proxy the environment names: the metadata service answers only on the instance itself.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    token_request = urllib.request.Request(base + "/latest/api/token", method="PUT",
                                           headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
    try:
        with opener.open(token_request, timeout=timeout) as answer:
            token = answer.read().decode()
        id_request = urllib.request.Request(base + "/latest/meta-data/instance-id",
                                            headers={"X-aws-ec2-metadata-token": token})
        with opener.open(id_request, timeout=timeout) as answer:
            return answer.read().decode().strip()
    except (OSError, ValueError) as error:
        raise GroupUnavailable(f"the instance metadata service did not answer: {error}") from None


class Backoff:
    """When a failing call may be tried next."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.failures = 0
        self.next_at = 0.0

    def due(self) -> bool:
        return self.clock() >= self.next_at

    def failed(self) -> float:
        self.failures += 1
        delay = min(RETRY_SECONDS * 2 ** min(self.failures - 1, 16), RETRY_MAX_SECONDS)
        self.next_at = self.clock() + delay
        return delay

    def succeeded(self) -> None:
        self.failures, self.next_at = 0, 0.0


class GroupMembership:
    """This instance in its Auto Scaling group, found with DescribeAutoScalingInstances."""

    def __init__(self, instance_id: str = "", client: Any = None,
                 find_instance_id: Callable[[], str] = instance_id_from_metadata) -> None:
        self._instance_id = instance_id
        self._find_instance_id = find_instance_id
        self._client = client
        self._lock = threading.Lock()
        self.group_name: str | None = None
        # What the group was last told about scale-in protection (None: nothing yet).
        self.protected: bool | None = None
        self._lookup = Backoff()
        self._lookup_error = ""
        self._protection = Backoff()
        self.left = False

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = aws_client("autoscaling")
        return self._client

    def instance_id(self) -> str:
        if not self._instance_id:
            self._instance_id = self._find_instance_id()
        return self._instance_id

    def group(self) -> str:
        """The group's name; GroupUnavailable while it cannot be learnt, or when the box is in none."""
        if self.group_name is not None:
            return self.group_name
        if not self._lookup.due():
            raise GroupUnavailable(f"{self._lookup_error} (looked up again later)")
        try:
            instance_id = self.instance_id()
            found = self.client.describe_auto_scaling_instances(InstanceIds=[instance_id])["AutoScalingInstances"]
        except (GroupUnavailable, *aws_errors()) as error:
            delay = self._lookup.failed()
            self._lookup_error = describe_error(error)
            log.warning("Auto Scaling group not known yet", extra={
                "event": "fleet.group_lookup_failed", "reason": describe_error(error), "retry_in_s": delay})
            raise GroupUnavailable(describe_error(error)) from None
        if not found:
            delay = self._lookup.failed()
            self._lookup_error = f"instance {instance_id} is in no Auto Scaling group"
            log.warning("this instance is in no Auto Scaling group", extra={
                "event": "fleet.no_group", "instance_id": instance_id, "retry_in_s": delay})
            raise GroupUnavailable(self._lookup_error)
        self._lookup.succeeded()
        self.group_name = found[0]["AutoScalingGroupName"]
        log.info("member of an Auto Scaling group", extra={
            "event": "fleet.group", "instance_id": instance_id, "group": self.group_name})
        return self.group_name

    def keep_protection(self, busy: bool) -> None:
        """Protected from scale-in while busy, unprotected when idle: told to the group on each change, and
        again later when telling it failed."""
        with self._lock:
            if self.left or busy == self.protected or not self._protection.due():
                return
            try:
                group = self.group()
                self.client.set_instance_protection(InstanceIds=[self.instance_id()], AutoScalingGroupName=group,
                                                    ProtectedFromScaleIn=busy)
            except GroupUnavailable:
                return
            except aws_errors() as error:
                delay = self._protection.failed()
                log.warning("scale-in protection not changed", extra={
                    "event": "fleet.protection_failed", "protect": busy, "reason": describe_error(error),
                    "retry_in_s": delay})
                return
            self._protection.succeeded()
            self.protected = busy
        log.info("scale-in protection " + ("set" if busy else "cleared"), extra={
            "event": "fleet.protection", "protected": busy, "group": self.group_name})

    def leave(self) -> tuple[bool, str]:
        """Terminate this instance through its group, which then wants one instance less; (done, what happened)."""
        with self._lock:
            try:
                group = self.group()
                self.client.terminate_instance_in_auto_scaling_group(InstanceId=self.instance_id(),
                                                                     ShouldDecrementDesiredCapacity=True)
            except GroupUnavailable as error:
                return False, str(error)
            except aws_errors() as error:
                return False, describe_error(error)
            self.left = True
        return True, f"left Auto Scaling group {group}"


def describe_error(error: BaseException) -> str:
    """An AWS failure in a log line: the error code and message, never the request."""
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        details = response.get("Error", {})
        return f"{details.get('Code', 'error')}: {details.get('Message', '')}".strip()
    return f"{type(error).__name__}: {error}"
