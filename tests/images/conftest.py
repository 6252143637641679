"""The VM proof reports each step's time as it goes, and all of them again at the end of the run.

A green proof run (SERVER_RESPONDER_VM_PROOF=1, every step passed, nothing failed) writes the proof record
(proof_record.py) for the inputs it saw at its start, provided they did not change while it ran.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import proof_record
import pytest
from image_proof import STEPS

_STEP_TIMES = pytest.StashKey[list[str]]()
_PROVEN = pytest.StashKey[dict]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "vms: boots QEMU virtual machines through libvirt, Vagrant and Packer")
    config.stash[_STEP_TIMES] = []
    config.stash[_PROVEN] = {"steps": [], "host_tests_passed": {}}
    if os.environ.get("SERVER_RESPONDER_VM_PROOF") == "1":
        config.stash[_PROVEN]["digest"] = proof_record.digest()


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


@pytest.fixture(scope="session")
def proven(pytestconfig: pytest.Config) -> dict:
    """What the proof fixture hands back for the record: each step's time, the host suite's counts."""
    return pytestconfig.stash[_PROVEN]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    proof = session.config.stash[_PROVEN]
    seen = proof.get("digest")
    if seen is None or exitstatus != 0 or session.testsfailed:
        return
    if [name for name, _ in proof["steps"]] != list(STEPS):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    passed = len(reporter.stats.get("passed", [])) if reporter is not None else 0
    if proof_record.digest() != seen:
        if reporter is not None:
            reporter.write_line("VM proof inputs changed while it ran: no proof record written", red=True)
        return
    path = proof_record.write_record(
        proof_record.PROJECT, seen, passed, proof["steps"], proof["host_tests_passed"]
    )
    if reporter is not None:
        reporter.write_line(f"VM proof record written: {path} (inputs {seen[:16]})", green=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if config.stash[_STEP_TIMES]:
        terminalreporter.section("VM proof: time per step")
        for line in config.stash[_STEP_TIMES]:
            terminalreporter.write_line(line)
