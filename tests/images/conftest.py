"""The VM proof reports each step's time as it goes, and all of them again at the end of the run."""

from __future__ import annotations

from collections.abc import Callable

import pytest

_STEP_TIMES = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "vms: boots QEMU virtual machines through libvirt, Vagrant and Packer")
    config.stash[_STEP_TIMES] = []


@pytest.fixture(scope="session")
def step_report(pytestconfig: pytest.Config) -> Callable[[str], None]:
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    lines = pytestconfig.stash[_STEP_TIMES]

    def report(line: str) -> None:
        lines.append(line)
        if reporter is not None:
            reporter.write_line("")
            reporter.write_line(line)

    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if config.stash[_STEP_TIMES]:
        terminalreporter.section("VM proof: time per step")
        for line in config.stash[_STEP_TIMES]:
            terminalreporter.write_line(line)
