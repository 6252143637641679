"""The Packer template is valid for Debian's packer 1.6 and formatted; its 1.6 view matches the full one."""

from __future__ import annotations

import difflib
import subprocess
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
PACKER = PROJECT / "packer"
LEGACY = PACKER / "packer-1.6"


@pytest.fixture(scope="module")
def ssh_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The qemu source's key file must exist to validate; the default one exists only once Vagrant has run."""
    key = tmp_path_factory.mktemp("packer-key") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=60)
    return key


def packer(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["packer", *args], cwd=PROJECT, capture_output=True, text=True, timeout=300)


def validate(key: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return packer("validate", "-var", f"qemu_ssh_private_key_file={key}", *args, "packer/packer-1.6")


def test_packer_1_6_validates_the_template(ssh_key: Path) -> None:
    answer = validate(ssh_key)
    assert answer.returncode == 0, answer.stdout + answer.stderr


def test_a_missing_key_file_is_named(tmp_path: Path) -> None:
    answer = validate(tmp_path / "no-such-key")
    assert answer.returncode != 0
    assert "no-such-key" in answer.stdout + answer.stderr


@pytest.mark.parametrize("directory", [PACKER, LEGACY], ids=["packer", "packer-1.6"])
def test_template_is_formatted(directory: Path) -> None:
    answer = packer("fmt", "-check", "-diff", str(directory.relative_to(PROJECT)))
    assert answer.returncode == 0, answer.stdout + answer.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("app_version", "one"),
        ("debian_release", "11"),
        ("aws_region", "Europe"),
        ("aws_source_ami_owner", "debian"),
        ("qemu_accelerator", "vbox"),
    ],
)
def test_variables_are_validated(ssh_key: Path, variable: str, value: str) -> None:
    answer = validate(ssh_key, "-var", f"{variable}={value}")
    assert answer.returncode != 0
    assert f"The {variable} must" in answer.stdout + answer.stderr


def test_packer_1_6_reads_every_file_but_the_plugin_pins() -> None:
    full = {path.name for path in PACKER.glob("*.pkr.hcl")}
    legacy = {path.name for path in LEGACY.glob("*.pkr.hcl")}
    assert legacy == full - {"plugins.pkr.hcl"}
    shared = [path for path in LEGACY.glob("*.pkr.hcl") if path.is_symlink()]
    assert {path.resolve() for path in shared} <= {path.resolve() for path in PACKER.glob("*.pkr.hcl")}


def test_amazon_source_differs_for_packer_1_6_only_in_imds_settings() -> None:
    def settings(path: Path) -> list[str]:
        lines = [line.strip() for line in path.read_text().splitlines()]
        return [line for line in lines if line and not line.startswith("#")]

    diff = difflib.ndiff(settings(LEGACY / "sources-amazon.pkr.hcl"), settings(PACKER / "sources-amazon.pkr.hcl"))
    changes = [line for line in diff if line[:1] in "+-"]
    assert sorted(changes) == sorted(
        [
            '+ imds_support = "v2.0"',
            "+ metadata_options {",
            '+ http_endpoint               = "enabled"',
            '+ http_tokens                 = "required"',
            "+ http_put_response_hop_limit = 1",
            "+ }",
        ]
    )
