"""The engine plugin that runs the idle watch keeps running when a check fails."""

import logging
import time

from cherrypy.process.wspbus import Bus

from server_responder.responder import Responder
from server_responder.settings import Settings
from server_responder.web.app import IdleWatchPlugin


def test_a_failing_check_is_logged_and_the_next_checks_still_run(tmp_path, caplog):
    settings = Settings(data_dir=tmp_path, idle_shutdown_minutes=15, idle_check_seconds=0.05)
    bus = Bus()
    plugin = IdleWatchPlugin(bus, Responder.create(settings))
    calls = []

    def check(now):
        calls.append(now)
        if len(calls) == 1:
            raise RuntimeError("disk on fire")

    plugin.watch.check = check
    plugin.subscribe()
    with caplog.at_level(logging.ERROR, logger="server_responder.lifecycle"):
        bus.start()
        try:
            deadline = time.monotonic() + 60
            while len(calls) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            bus.exit()
    assert len(calls) >= 3
    assert [r.event for r in caplog.records if hasattr(r, "event")] == ["idle.check_error"]


def test_no_thread_when_self_stop_is_off(tmp_path):
    plugin = IdleWatchPlugin(Bus(), Responder.create(Settings(data_dir=tmp_path)))
    assert plugin.frequency == 0 and not plugin.watch.policy.enabled
