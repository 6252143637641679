"""The self-stop decision and the idle watch acting on it."""

import json
import logging
import sys

import pytest

from server_responder.lifecycle.drain import DrainSwitch
from server_responder.lifecycle.idle import IdleClock, IdleStatus
from server_responder.lifecycle.idle_watch import DRAIN, KEEP, SHUTDOWN, IdleWatch, StopPolicy, decide, run_shutdown_command
from server_responder.settings import Settings

POLICY = StopPolicy(idle_threshold=900, boot_grace=600, max_lifetime=0, lifetime_grace=3700, retry_delay=900)


def status(**changes):
    values = dict(now=10_000.0, booted_at=0.0, last_started=None, last_finished=None, running_jobs=0,
                  queued_jobs=0, draining=False)
    values.update(changes)
    return IdleStatus(**values)


@pytest.mark.parametrize("changes, policy, expected", [
    ({}, POLICY, (SHUTDOWN, "idle")),
    ({"last_finished": 9_200.0}, POLICY, (KEEP, "not_idle_long_enough")),
    ({"last_finished": 9_100.0}, POLICY, (SHUTDOWN, "idle")),
    ({"running_jobs": 1}, POLICY, (KEEP, "busy")),
    ({"queued_jobs": 1}, POLICY, (KEEP, "busy")),
    ({"running_jobs": 1, "last_started": 0.0}, POLICY, (KEEP, "busy")),
    ({"now": 500.0}, StopPolicy(60, 600, 0, 0, 60), (KEEP, "boot_grace")),
    ({"now": 700.0}, StopPolicy(60, 600, 0, 0, 60), (SHUTDOWN, "idle")),
    ({}, StopPolicy(0, 600, 0, 0, 60), (KEEP, "idle_shutdown_off")),
    ({"now": 3_600.0, "running_jobs": 1}, StopPolicy(0, 0, 3_600, 100, 60), (DRAIN, "max_lifetime_waiting_for_jobs")),
    ({"now": 3_600.0}, StopPolicy(0, 0, 3_600, 100, 60), (SHUTDOWN, "max_lifetime")),
    ({"now": 3_700.0, "running_jobs": 1}, StopPolicy(0, 0, 3_600, 100, 60), (SHUTDOWN, "max_lifetime_jobs_overdue")),
    ({"now": 3_599.0, "last_finished": 3_598.0}, StopPolicy(900, 0, 3_600, 100, 60), (KEEP, "not_idle_long_enough")),
    ({"last_finished": 9_000.0, "pending_uploads": 2}, POLICY, (KEEP, "uploads_pending")),
    ({"last_finished": 9_000.0, "pending_uploads": 0}, POLICY, (SHUTDOWN, "idle")),
    ({"last_finished": 8_200.0, "pending_uploads": 2}, POLICY, (SHUTDOWN, "idle")),
    ({"now": 3_600.0, "pending_uploads": 2}, StopPolicy(900, 0, 3_600, 100, 60), (SHUTDOWN, "max_lifetime")),
])
def test_decide(changes, policy, expected):
    decision = decide(status(**changes), policy)
    assert (decision.action, decision.reason) == expected


def test_no_retry_before_the_retry_time():
    assert decide(status(), POLICY, retry_at=10_001.0).reason == "shutdown_failed_recently"
    assert decide(status(), POLICY, retry_at=10_000.0).reason == "idle"


def test_policy_from_settings_in_seconds(tmp_path):
    settings = Settings(data_dir=tmp_path, idle_shutdown_minutes=15, idle_boot_grace_minutes=10,
                        max_lifetime_minutes=120, max_timeout=600, kill_grace_seconds=5)
    policy = StopPolicy.from_settings(settings)
    assert (policy.idle_threshold, policy.boot_grace, policy.max_lifetime) == (900, 600, 7200)
    assert policy.lifetime_grace == 665 and policy.enabled
    assert not StopPolicy.from_settings(Settings(data_dir=tmp_path)).enabled


class Jobs:
    def __init__(self):
        self.accepting = True
        self.running = 0
        self.queued = 0

    def set_accepting(self, accepting):
        self.accepting = accepting

    def counts(self):
        return {"running_jobs": self.running, "queued_jobs": self.queued}


class Commands:
    def __init__(self, results=None, on_run=None):
        self.calls = []
        self.results = list(results or [])
        self.on_run = on_run

    def __call__(self, argv):
        self.calls.append(list(argv))
        if self.on_run:
            self.on_run()
        return self.results.pop(0) if self.results else (True, "exit status 0")


def make_watch(tmp_path, policy=POLICY, commands=None, counts=None):
    jobs = Jobs()
    clock = IdleClock(tmp_path / "last_job.json", now=lambda: 0.0)
    drain = DrainSwitch(tmp_path / "drain.json", jobs, "boot")
    watch = IdleWatch(policy, ["poweroff-now"], clock, counts or jobs.counts, drain, commands or Commands())
    return watch, jobs


def test_idle_box_drains_then_runs_the_command_once(tmp_path):
    commands = Commands()
    watch, jobs = make_watch(tmp_path, commands=commands)
    assert watch.check(100.0).action == KEEP
    assert commands.calls == []
    assert watch.check(900.0).action == SHUTDOWN
    assert commands.calls == [["poweroff-now"]]
    assert jobs.accepting is False and watch.drain.draining
    assert watch.check(2_000.0).reason == "shutdown_command_already_run"
    assert commands.calls == [["poweroff-now"]]


def test_never_fires_with_a_job_running(tmp_path):
    commands = Commands()
    watch, jobs = make_watch(tmp_path, commands=commands)
    jobs.running = 1
    for now in (900.0, 5_000.0, 100_000.0):
        assert watch.check(now).reason == "busy"
    assert commands.calls == [] and jobs.accepting is True


def test_job_accepted_during_the_drain_cancels_the_stop(tmp_path):
    jobs = Jobs()
    counts_seen = []

    def counts():
        # The job arrives just after the decision: the second look, after the drain, sees it queued.
        counts_seen.append(1)
        return {"running_jobs": 0, "queued_jobs": 0 if len(counts_seen) == 1 else 1}

    commands = Commands()
    watch, jobs = make_watch(tmp_path, commands=commands, counts=counts)
    watch.check(1_000.0)
    assert commands.calls == []
    assert jobs.accepting is True and not watch.drain.draining


def test_failed_command_resumes_work_and_retries_later(tmp_path):
    commands = Commands(results=[(False, "exit status 1: not allowed")])
    watch, jobs = make_watch(tmp_path, commands=commands)
    watch.check(1_000.0)
    assert jobs.accepting is True and not watch.drain.draining
    assert watch.check(1_000.0 + POLICY.retry_delay - 1).reason == "shutdown_failed_recently"
    assert len(commands.calls) == 1
    watch.check(1_000.0 + POLICY.retry_delay)
    assert len(commands.calls) == 2 and watch.shut_down


def test_operator_drain_is_left_on_when_the_command_fails(tmp_path):
    commands = Commands(results=[(False, "exit status 1")])
    watch, jobs = make_watch(tmp_path, commands=commands)
    watch.drain.drain("api")
    watch.check(1_000.0)
    assert watch.drain.draining and watch.drain.reason == "api" and jobs.accepting is False


def test_lifetime_drains_a_busy_box_then_stops_when_its_jobs_end(tmp_path):
    commands = Commands()
    policy = StopPolicy(idle_threshold=0, boot_grace=0, max_lifetime=3_600, lifetime_grace=1_000, retry_delay=60)
    watch, jobs = make_watch(tmp_path, policy=policy, commands=commands)
    jobs.running = 1
    assert watch.check(3_600.0).action == DRAIN
    assert jobs.accepting is False and commands.calls == []
    jobs.running = 0
    assert watch.check(3_700.0).reason == "max_lifetime"
    assert commands.calls == [["poweroff-now"]]


def test_lifetime_stops_regardless_once_jobs_are_overdue(tmp_path):
    commands = Commands()
    policy = StopPolicy(idle_threshold=0, boot_grace=0, max_lifetime=3_600, lifetime_grace=1_000, retry_delay=60)
    watch, jobs = make_watch(tmp_path, policy=policy, commands=commands)
    jobs.running = 1
    assert watch.check(4_600.0).reason == "max_lifetime_jobs_overdue"
    assert commands.calls == [["poweroff-now"]]


def test_every_decision_is_a_log_event(tmp_path, caplog):
    watch, jobs = make_watch(tmp_path)
    with caplog.at_level(logging.INFO, logger="server_responder.lifecycle"):
        watch.check(100.0)
        jobs.running = 1
        watch.check(200.0)
    checks = [r for r in caplog.records if getattr(r, "event", None) == "idle.check"]
    assert [(r.action, r.reason) for r in checks] == [(KEEP, "boot_grace"), (KEEP, "busy")]
    assert checks[0].idle_seconds == 100.0 and checks[0].threshold_seconds == 900


def test_shutdown_command_runs_without_a_shell_and_with_a_clean_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVER_RESPONDER_API_KEY", "must-not-leak")
    out = tmp_path / "seen.json"
    script = "import json, os, sys; json.dump({'argv': sys.argv[1:], 'env': dict(os.environ)}, open(sys.argv[1], 'w'))"
    succeeded, _ = run_shutdown_command([sys.executable, "-c", script, str(out), "; touch /tmp/x", "$(id)"])
    assert succeeded
    seen = json.loads(out.read_text())
    assert seen["argv"] == [str(out), "; touch /tmp/x", "$(id)"]
    assert "SERVER_RESPONDER_API_KEY" not in seen["env"]


def test_shutdown_command_failures_are_reported_not_raised(tmp_path):
    assert run_shutdown_command([str(tmp_path / "no-such-command")])[0] is False
    succeeded, detail = run_shutdown_command([sys.executable, "-c", "import sys; sys.exit('refused')"])
    assert not succeeded and "refused" in detail and "exit status 1" in detail
