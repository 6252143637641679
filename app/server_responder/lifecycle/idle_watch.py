"""The box stops itself: idle long enough (or past its lifetime), it drains, then runs `shutdown_command`.

One code path for every kind of box: `systemctl poweroff` stops an EC2 instance whose instance-initiated
shutdown behaviour is "stop", and powers a Vagrant VM off.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from server_responder.lifecycle.drain import DrainSwitch
from server_responder.lifecycle.idle import IdleClock, IdleStatus
from server_responder.settings import Settings

if TYPE_CHECKING:
    from server_responder.responder import Responder

log = logging.getLogger("server_responder.lifecycle")

SHUTDOWN_TIMEOUT_SECONDS = 120.0
SHUTDOWN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
# Past the lifetime, running jobs get this long beyond their own longest timeout before they are interrupted.
LIFETIME_MARGIN_SECONDS = 60.0

# Results still uploading hold an idle box up until it has been idle this many thresholds.
UPLOAD_WAIT_FACTOR = 2

# What the log names as the command when an idle box leaves its Auto Scaling group instead of powering off.
LEAVE_GROUP_COMMAND = ("TerminateInstanceInAutoScalingGroup", "ShouldDecrementDesiredCapacity=true")

KEEP = "keep"
DRAIN = "drain"
SHUTDOWN = "shutdown"


@dataclass(frozen=True)
class StopPolicy:
    """The settings of self-stop, in seconds; 0 switches a limit off."""

    idle_threshold: float
    boot_grace: float
    max_lifetime: float
    lifetime_grace: float
    retry_delay: float

    @classmethod
    def from_settings(cls, settings: Settings) -> StopPolicy:
        idle_threshold = settings.idle_shutdown_minutes * 60
        return cls(
            idle_threshold=idle_threshold,
            boot_grace=settings.idle_boot_grace_minutes * 60,
            max_lifetime=settings.max_lifetime_minutes * 60,
            lifetime_grace=settings.max_timeout + settings.kill_grace_seconds + LIFETIME_MARGIN_SECONDS,
            retry_delay=max(idle_threshold, 60.0, settings.idle_check_seconds),
        )

    @property
    def enabled(self) -> bool:
        return self.idle_threshold > 0 or self.max_lifetime > 0


@dataclass(frozen=True)
class Decision:
    action: str
    reason: str


def decide(status: IdleStatus, policy: StopPolicy, retry_at: float | None = None) -> Decision:
    """What the box should do now. Pure: the same status and policy always give the same decision."""
    if retry_at is not None and status.now < retry_at:
        return Decision(KEEP, "shutdown_failed_recently")
    if policy.max_lifetime > 0 and status.uptime_seconds >= policy.max_lifetime:
        if not status.busy:
            return Decision(SHUTDOWN, "max_lifetime")
        if status.uptime_seconds >= policy.max_lifetime + policy.lifetime_grace:
            return Decision(SHUTDOWN, "max_lifetime_jobs_overdue")
        return Decision(DRAIN, "max_lifetime_waiting_for_jobs")
    if policy.idle_threshold <= 0:
        return Decision(KEEP, "idle_shutdown_off")
    if status.busy:
        return Decision(KEEP, "busy")
    if status.uptime_seconds < policy.boot_grace:
        return Decision(KEEP, "boot_grace")
    if status.idle_seconds < policy.idle_threshold:
        return Decision(KEEP, "not_idle_long_enough")
    # The spool outlives a stop and is delivered at the next boot, so a store that stays down holds the box
    # up for one more idle threshold at most.
    if status.pending_uploads > 0 and status.idle_seconds < UPLOAD_WAIT_FACTOR * policy.idle_threshold:
        return Decision(KEEP, "uploads_pending")
    return Decision(SHUTDOWN, "idle")


def run_shutdown_command(argv: Sequence[str]) -> tuple[bool, str]:
    """Run the command as an argv list, never through a shell; (succeeded, what happened)."""
    try:
        done = subprocess.run(list(argv), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=SHUTDOWN_TIMEOUT_SECONDS, env=SHUTDOWN_ENV, check=False)
    except (OSError, subprocess.SubprocessError) as error:
        return False, f"{type(error).__name__}: {error}"
    if done.returncode != 0:
        return False, f"exit status {done.returncode}: {(done.stderr or done.stdout).strip()[-500:]}"
    return True, "exit status 0"


class IdleWatch:
    """Decides at each check whether to stop the box and acts on it: drain, then run the shutdown command once."""

    def __init__(self, policy: StopPolicy, shutdown_command: Sequence[str], clock: IdleClock,
                 counts: Callable[[], dict[str, int]], drain: DrainSwitch,
                 run_command: Callable[[Sequence[str]], tuple[bool, str]] = run_shutdown_command) -> None:
        self.policy = policy
        self.shutdown_command = tuple(shutdown_command)
        self.clock = clock
        self.counts = counts
        self.drain = drain
        self.run_command = run_command
        self.shut_down = False
        self.retry_at: float | None = None

    @classmethod
    def for_responder(cls, responder: Responder) -> IdleWatch:
        settings = responder.settings
        policy = StopPolicy.from_settings(settings)
        if settings.idle_action == "leave-group" and responder.fleet is not None:
            # In an Auto Scaling group the box leaves it instead: the group then wants one instance less.
            fleet = responder.fleet
            return cls(policy, LEAVE_GROUP_COMMAND, responder.clock, responder.counts, responder.drain,
                       run_command=lambda argv: fleet.leave_group())
        return cls(policy, settings.shutdown_command, responder.clock, responder.counts, responder.drain)

    def status(self, now: float) -> IdleStatus:
        return self.clock.status(self.counts(), self.drain.draining, now)

    def check(self, now: float) -> Decision:
        """One check: decide, act, and log the decision as an `idle.check` event."""
        status = self.status(now)
        if self.shut_down:
            decision = Decision(KEEP, "shutdown_command_already_run")
        else:
            decision = decide(status, self.policy, self.retry_at)
        self._log(decision, status)
        if decision.action == DRAIN:
            self.drain.drain(decision.reason)
        elif decision.action == SHUTDOWN:
            self._shut_down(decision, now)
        return decision

    def _shut_down(self, decision: Decision, now: float) -> None:
        started_drain = self.drain.drain(decision.reason)
        # A job may have been accepted between the decision and the drain; then the box is not idle after all.
        after = self.status(now)
        if after.busy and decision.reason != "max_lifetime_jobs_overdue":
            if decision.reason == "idle":
                if started_drain:
                    self.drain.resume()
                self._log(Decision(KEEP, "job_arrived_while_draining"), after)
            else:
                self._log(Decision(DRAIN, "max_lifetime_waiting_for_jobs"), after)
            return
        log.warning("running the shutdown command", extra={
            "event": "idle.shutdown", "reason": decision.reason, "command": list(self.shutdown_command),
            "idle_seconds": round(after.idle_seconds, 1), "threshold_seconds": self.policy.idle_threshold,
            "running_jobs": after.running_jobs, "queued_jobs": after.queued_jobs})
        succeeded, detail = self.run_command(self.shutdown_command)
        if succeeded:
            self.shut_down = True
            log.warning("shutdown command ran", extra={"event": "idle.shutdown_done", "reason": decision.reason,
                                                       "detail": detail})
            return
        self.retry_at = now + self.policy.retry_delay
        # A box that cannot stop itself should go on working; the reaper can still stop it from outside.
        if decision.reason == "idle" and started_drain:
            self.drain.resume()
        log.error("shutdown command failed", extra={
            "event": "idle.shutdown_failed", "reason": decision.reason, "detail": detail,
            "command": list(self.shutdown_command), "retry_in_seconds": self.policy.retry_delay})

    def _log(self, decision: Decision, status: IdleStatus) -> None:
        log.info("idle check", extra={
            "event": "idle.check", "action": decision.action, "reason": decision.reason,
            "idle_seconds": round(status.idle_seconds, 1), "threshold_seconds": self.policy.idle_threshold,
            "uptime_seconds": round(status.uptime_seconds, 1), "boot_grace_seconds": self.policy.boot_grace,
            "max_lifetime_seconds": self.policy.max_lifetime, "running_jobs": status.running_jobs,
            "queued_jobs": status.queued_jobs, "pending_uploads": status.pending_uploads,
            "draining": status.draining})
