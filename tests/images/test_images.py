"""The VM proof (image_proof.py) as tests: one test per step, in order; each fails if its step fails."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from image_proof import STEPS, ImageProof

pytestmark = [
    pytest.mark.vms,
    pytest.mark.skipif(os.geteuid() != 0, reason="the VM proof needs root: debootstrap, libvirt, QEMU"),
    # Under software emulation the proof takes longer than a test run should; it is asked for explicitly.
    pytest.mark.skipif(os.environ.get("SERVER_RESPONDER_VM_PROOF") != "1",
                       reason="the VM proof runs with ./dev test-images (SERVER_RESPONDER_VM_PROOF=1 and the "
                              "packages of tests/images/vm-packages.txt)"),
]


@pytest.fixture(scope="module")
def proof(
    tmp_path_factory: pytest.TempPathFactory, step_report: Callable[[str], None], proven: dict
) -> Iterator[ImageProof]:
    workdir: Path = tmp_path_factory.mktemp("image-proof")
    with ImageProof(workdir, report=step_report) as image_proof:
        yield image_proof
    proven["steps"] = [(step.name, step.seconds) for step in image_proof.times if step.ok]
    proven["host_tests_passed"] = dict(image_proof.host_tests_passed)
    total = sum(step.seconds for step in image_proof.times)
    step_report(f"[images] total {total:.1f} s; logs in {workdir / 'logs'}")


@pytest.mark.parametrize("step", STEPS)
def test_step(proof: ImageProof, step: str) -> None:
    proof.run(step)
