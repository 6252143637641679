"""The proof record's digest covers exactly the VM proof's inputs: any of them changes it, nothing else does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import proof_record
import pytest

# One file per input, as a project would have them, and files outside the inputs.
INPUT_FILES = {
    "Vagrantfile": "Vagrant.configure('2') do |config|\nend\n",
    "packer/build.pkr.hcl": "build {}\n",
    "packer/scripts/testinfra": "#!/bin/sh\n",
    "ansible/site.yml": "- hosts: all\n",
    "ansible/roles/r/tasks/main.yml": "- name: task\n",
    "tests/images/image_proof.py": "STEPS = ()\n",
    "tests/infra/test_host.py": "def test_host(): pass\n",
    "tests/host-packages.txt": "git\n",
    "pyproject.toml": "[project]\nname = 'x'\n",
    "dev": "#!/bin/sh\n",
}
OUTSIDE_FILES = {
    "app/server_responder/service.py": "print('service')\n",
    "tests/unit/test_service.py": "def test(): pass\n",
    "tests/conftest.py": "\n",
    "README.md": "# x\n",
    "packer/README.md": "# packer\n",
    "ansible/roles/r/README.md": "# role\n",
    str(proof_record.RECORD): "{}\n",
}


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for name, text in {**INPUT_FILES, **OUTSIDE_FILES}.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "packer" / "packer-1.6").mkdir()
    (tmp_path / "packer" / "packer-1.6" / "build.pkr.hcl").symlink_to("../build.pkr.hcl")
    (tmp_path / ".gitignore").write_text("__pycache__/\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tree")
    return tmp_path


@pytest.mark.parametrize("name", sorted(INPUT_FILES))
def test_changing_any_input_changes_the_digest(project: Path, name: str) -> None:
    before = proof_record.digest(project)
    path = project / name
    path.write_text(path.read_text() + "# changed\n")
    assert proof_record.digest(project) != before
    git(project, "checkout", "--", name)
    assert proof_record.digest(project) == before


@pytest.mark.parametrize("name", sorted(OUTSIDE_FILES))
def test_changing_a_file_outside_the_inputs_keeps_the_digest(project: Path, name: str) -> None:
    before = proof_record.digest(project)
    path = project / name
    path.write_text(path.read_text() + "# changed\n")
    assert proof_record.digest(project) == before


def test_new_removed_executable_and_relinked_inputs_change_the_digest(project: Path) -> None:
    digests = [proof_record.digest(project)]
    (project / "ansible" / "roles" / "r" / "tasks" / "new.yml").write_text("- name: new\n")
    digests.append(proof_record.digest(project))
    (project / "tests" / "infra" / "test_host.py").unlink()
    digests.append(proof_record.digest(project))
    (project / "packer" / "scripts" / "testinfra").chmod(0o755)
    digests.append(proof_record.digest(project))
    link = project / "packer" / "packer-1.6" / "build.pkr.hcl"
    link.unlink()
    link.symlink_to("../scripts/testinfra")
    digests.append(proof_record.digest(project))
    assert len(set(digests)) == len(digests)


def test_ignored_files_are_not_inputs(project: Path) -> None:
    before = proof_record.digest(project)
    cache = project / "tests" / "images" / "__pycache__"
    cache.mkdir()
    (cache / "image_proof.cpython-311.pyc").write_bytes(b"\0compiled")
    assert proof_record.digest(project) == before


def test_the_record_stands_only_for_the_tree_it_proved(project: Path) -> None:
    assert proof_record.standing_proof(project) is None
    proof_record.write_record(project, proof_record.digest(project), 30, [("base image", 12.5)], {"stock": 102})
    line = proof_record.standing_proof(project)
    assert line is not None and proof_record.digest(project)[:16] in line and "30 tests passed" in line
    record = proof_record.read_record(project)
    assert record["steps"] == [{"name": "base image", "seconds": 12.5}] and record["host_tests_passed"] == {"stock": 102}
    (project / "tests" / "unit" / "test_service.py").write_text("# an app change alone\n")
    assert proof_record.standing_proof(project) is not None
    (project / "ansible" / "site.yml").write_text("- hosts: none\n")
    assert proof_record.standing_proof(project) is None


def test_every_named_input_exists_in_this_project() -> None:
    for name in proof_record.PROOF_INPUTS:
        assert os.path.lexists(proof_record.PROJECT / name), f"{name} is named as a proof input but is missing"
    files = proof_record.input_files(proof_record.PROJECT)
    assert {"Vagrantfile", "ansible/site.yml", "packer/scripts/testinfra", "tests/infra/conftest.py",
            "tests/images/image_proof.py", "pyproject.toml"} <= set(files)  # fmt: skip
    assert not [name for name in files if name.startswith("app/") or name.endswith(".md")]
    assert str(proof_record.RECORD) not in files


def test_the_command_prints_the_checkout_digest() -> None:
    answer = subprocess.run([sys.executable, proof_record.__file__, "digest"], capture_output=True, text=True,
                            check=True)  # fmt: skip
    assert answer.stdout.strip() == proof_record.digest(proof_record.PROJECT)
