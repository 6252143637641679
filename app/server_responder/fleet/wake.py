"""Waking stopped boxes on demand: start the instances, wait until EC2 says running and the responder answers.

A box is ready once its responder answers `/health`; EC2's `running` alone is not enough, since the service
starts some seconds after the instance does.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from server_responder.fleet.polling import poll_pauses
from server_responder.reaper.program import POLL_WORKERS, Instance, ResponderClient, instance_address

# States an instance passes through on its way to running; a terminated one never gets there.
_ON_THE_WAY = frozenset({"pending", "stopping", "stopped", "running"})
# Errors of StartInstances that clear by themselves: the instance is still stopping, or EC2 is busy.
_PASSING_START_ERRORS = frozenset({"IncorrectInstanceState", "RequestLimitExceeded", "Throttling",
                                   "InsufficientInstanceCapacity"})


class WakeError(Exception):
    """The instances to wake cannot be found or EC2 cannot be asked; the message says which and why."""


@dataclass
class Waking:
    """One instance on its way to ready; `line()` is what `wake` prints for it."""

    id: str
    state: str = "unknown"
    url: str | None = None
    health: dict[str, Any] | None = None
    problem: str | None = None
    failed: bool = False
    # Seconds from the start of the wake until the instance was ready, failed, or the deadline passed.
    seconds: float | None = None

    @property
    def ready(self) -> bool:
        return self.health is not None

    @property
    def settled(self) -> bool:
        return self.ready or self.failed

    def line(self) -> str:
        document: dict[str, Any] = {"id": self.id, "url": self.url, "ready": self.ready, "state": self.state,
                                    "seconds": round(self.seconds or 0.0, 3)}
        if self.health is not None:
            document["status"] = self.health.get("status")
            document["accepting"] = self.health.get("accepting")
        if not self.ready:
            document["error"] = self.problem or "not ready"
        return json.dumps(document)


def tagged_instances(ec2: Any, tag_key: str, tag_value: str | None) -> list[str]:
    """The ids of the instances with this tag (and value) that can still be woken."""
    from botocore.exceptions import BotoCoreError, ClientError

    filters = [{"Name": "instance-state-name", "Values": sorted(_ON_THE_WAY)},
               {"Name": "tag-key", "Values": [tag_key]} if tag_value is None
               else {"Name": f"tag:{tag_key}", "Values": [tag_value]}]
    try:
        pages = ec2.get_paginator("describe_instances").paginate(Filters=filters)
        ids = [found["InstanceId"] for page in pages for reservation in page.get("Reservations", [])
               for found in reservation.get("Instances", [])]
    except (BotoCoreError, ClientError) as error:
        raise WakeError(f"listing instances failed: {error}") from None
    if not ids:
        shown = tag_key if tag_value is None else f"{tag_key}={tag_value}"
        raise WakeError(f"no instance tagged {shown} that is pending, running, stopping or stopped")
    return sorted(ids)


class Waker:
    """Starts instances and watches them until their responders answer, or the deadline passes."""

    def __init__(self, ec2: Any, client: ResponderClient, private_address: bool,
                 clock: Callable[[], float] = time.monotonic, pause: Callable[[float], None] = time.sleep) -> None:
        self.ec2 = ec2
        self.client = client
        self.private_address = private_address
        self.clock = clock
        self.pause = pause

    def wake(self, instance_ids: Sequence[str], ready_timeout: float) -> Iterator[Waking]:
        """Each instance once settled: as soon as it is ready, or failed, or, at the deadline, still waiting."""
        began = self.clock()
        deadline = began + ready_timeout
        waiting = {instance_id: Waking(instance_id) for instance_id in dict.fromkeys(instance_ids)}
        pauses = poll_pauses()
        while waiting:
            running = [instance for description in self._describe(list(waiting))
                       if (instance := self._advance(waiting[description["InstanceId"]], description))]
            # Asked all at once: a box that does not answer yet costs one timeout per round, not one per box.
            with ThreadPoolExecutor(max_workers=max(1, min(POLL_WORKERS, len(running)))) as pool:
                for instance, answer in zip(running, pool.map(self.client.health, running)):
                    self._judge_health(waiting[instance.id], *answer)
            for instance_id in [instance_id for instance_id, waking in waiting.items() if waking.settled]:
                waking = waiting.pop(instance_id)
                waking.seconds = self.clock() - began
                yield waking
            remaining = deadline - self.clock()
            if waiting and remaining <= 0:
                for waking in waiting.values():
                    waking.seconds = self.clock() - began
                    waking.problem = (f"not ready after {ready_timeout:g} s (EC2 says {waking.state}"
                                      + (f"; {waking.problem}" if waking.problem else "") + ")")
                    yield waking
                return
            if waiting:
                self.pause(min(next(pauses), remaining))

    def _describe(self, instance_ids: list[str]) -> list[dict[str, Any]]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            pages = self.ec2.get_paginator("describe_instances").paginate(InstanceIds=instance_ids)
            return [found for page in pages for reservation in page.get("Reservations", [])
                    for found in reservation.get("Instances", [])]
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code.startswith("InvalidInstanceID"):
                raise WakeError(f"no such instance: {error.response['Error'].get('Message', code)}") from None
            raise WakeError(f"describing instances failed: {error}") from None
        except BotoCoreError as error:
            raise WakeError(f"describing instances failed: {error}") from None

    def _advance(self, waking: Waking, description: dict[str, Any]) -> Instance | None:
        """One step towards ready for one instance, from what EC2 now says about it; the instance to ask for
        its health once EC2 says it runs."""
        waking.state = description.get("State", {}).get("Name", "unknown")
        if waking.state not in _ON_THE_WAY:
            waking.failed, waking.problem = True, f"the instance is {waking.state} and cannot be started"
        elif waking.state == "stopped":
            self._start(waking)
        elif waking.state == "running":
            instance = Instance(waking.id, instance_address(description, self.private_address))
            waking.url = self.client.base_url(instance)
            return instance
        return None

    @staticmethod
    def _judge_health(waking: Waking, health: dict[str, Any] | None, error: str | None) -> None:
        if health is not None and isinstance(health.get("status"), str):
            waking.health = health
        else:
            waking.problem = f"the responder does not answer /health yet: {error or 'not a /health document'}"

    def _start(self, waking: Waking) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.ec2.start_instances(InstanceIds=[waking.id])
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            waking.problem = f"start_instances failed: {code or error}"
            waking.failed = code not in _PASSING_START_ERRORS
        except BotoCoreError as error:
            waking.problem = f"start_instances failed: {error}"
