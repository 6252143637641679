"""Fixtures of the test boxes: one Debian box per suite, booted for its module and torn down by PID."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from boxes import RUNS_DIR, SPECS, OUTCOMES, TIMINGS, Box, BoxRun, ensure_rootfs, host_mirror, make_ssh_key, prune_old_runs

RUN_DIRS: list[Path] = []


@dataclass(frozen=True)
class BoxSession:
    run_dir: Path
    key: Path
    mirror: str


@pytest.fixture(scope="session")
def box_session() -> BoxSession:
    if os.geteuid() != 0:
        pytest.skip("the test boxes need root (debootstrap, systemd-nspawn, network namespaces); CI runs as root")
    missing = [tool for tool in ("debootstrap", "systemd-nspawn", "ssh", "ssh-keygen", "ip") if not shutil.which(tool)]
    if missing:
        pytest.fail(f"missing on this machine: {', '.join(missing)} (see tests/host-packages.txt)")
    prune_old_runs()
    run_dir = RUNS_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    run_dir.mkdir(parents=True)
    RUN_DIRS.append(run_dir)
    return BoxSession(run_dir, make_ssh_key(run_dir), host_mirror())


@pytest.fixture(scope="module", params=sorted(SPECS), ids=lambda suite: suite)
def box_run(request: pytest.FixtureRequest, box_session: BoxSession) -> Iterator[BoxRun]:
    spec = SPECS[request.param]
    started = time.monotonic()
    rootfs = ensure_rootfs(spec.suite, box_session.mirror)
    TIMINGS.append((spec.suite, "root filesystem (cached or debootstrap)", time.monotonic() - started))
    box = Box(spec, rootfs, box_session.run_dir / spec.name, box_session.key, box_session.mirror)
    try:
        box.create()
        TIMINGS.append((spec.suite, "boot", box.boot()))
        yield BoxRun(box)
    finally:
        box.destroy()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TIMINGS:
        return
    terminalreporter.section("test box timings")
    for suite, what, seconds in TIMINGS:
        terminalreporter.write_line(f"{suite:<9} {what:<42} {seconds:7.1f} s")
    for suite, what, summary in OUTCOMES:
        terminalreporter.write_line(f"{suite:<9} {what:<42} {summary}")
    for run_dir in RUN_DIRS:
        terminalreporter.write_line(f"logs of every step: {run_dir}")
