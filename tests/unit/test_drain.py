"""The drain switch: refuses jobs, persists within a boot, not across boots."""

import json

from server_responder.lifecycle.drain import DrainSwitch, current_boot_id


class Jobs:
    def __init__(self):
        self.accepting = True

    def set_accepting(self, accepting):
        self.accepting = accepting


def test_drain_and_resume_switch_the_job_service(tmp_path):
    jobs = Jobs()
    switch = DrainSwitch(tmp_path / "drain.json", jobs, "boot-1", now=lambda: 50.0)
    assert switch.drain("api") is True
    assert (jobs.accepting, switch.draining, switch.reason, switch.since) == (False, True, "api", 50.0)
    assert switch.drain("idle") is False and switch.reason == "api"
    assert switch.resume() is True
    assert (jobs.accepting, switch.draining) == (True, False)
    assert not (tmp_path / "drain.json").exists()
    assert switch.resume() is False


def test_drain_survives_a_restart_within_the_same_boot(tmp_path):
    DrainSwitch(tmp_path / "drain.json", Jobs(), "boot-1").drain("api")
    jobs = Jobs()
    restored = DrainSwitch(tmp_path / "drain.json", jobs, "boot-1")
    restored.restore()
    assert restored.draining and restored.reason == "api" and jobs.accepting is False


def test_drain_from_an_earlier_boot_is_dropped(tmp_path):
    DrainSwitch(tmp_path / "drain.json", Jobs(), "boot-1").drain("idle")
    jobs = Jobs()
    after_reboot = DrainSwitch(tmp_path / "drain.json", jobs, "boot-2")
    after_reboot.restore()
    assert not after_reboot.draining and jobs.accepting is True
    assert not (tmp_path / "drain.json").exists()


def test_without_a_boot_id_a_drain_lasts_only_as_long_as_the_process(tmp_path):
    DrainSwitch(tmp_path / "drain.json", Jobs(), None).drain("api")
    restored = DrainSwitch(tmp_path / "drain.json", Jobs(), None)
    restored.restore()
    assert not restored.draining


def test_garbage_record_is_ignored(tmp_path):
    (tmp_path / "drain.json").write_text("[1, 2")
    switch = DrainSwitch(tmp_path / "drain.json", Jobs(), "boot-1")
    switch.restore()
    assert not switch.draining
    (tmp_path / "drain.json").write_text(json.dumps(["draining"]))
    switch.restore()
    assert not switch.draining


def test_boot_id_is_read_from_the_kernel_file(tmp_path):
    path = tmp_path / "boot_id"
    path.write_text("6f1c\n")
    assert current_boot_id(path) == "6f1c"
    assert current_boot_id(tmp_path / "missing") is None
