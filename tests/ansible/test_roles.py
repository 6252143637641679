"""The Ansible roles: lint clean at the production profile, every public knob prefixed, typed and documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ANSIBLE = REPO / "ansible"
ROLES = sorted(path.name for path in (ANSIBLE / "roles").iterdir() if path.is_dir())
BIN = Path(sys.executable).parent


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)


def defaults(role: str) -> dict:
    return yaml.safe_load((ANSIBLE / "roles" / role / "defaults" / "main.yml").read_text()) or {}


def argument_specs(role: str) -> dict:
    specs = yaml.safe_load((ANSIBLE / "roles" / role / "meta" / "argument_specs.yml").read_text())
    return specs["argument_specs"]["main"]["options"]


def test_ansible_lint_production_profile_passes():
    result = run(str(BIN / "ansible-lint"), "--profile", "production", "ansible/")
    assert result.returncode == 0, result.stdout


def test_yamllint_passes():
    result = run(sys.executable, "-m", "yamllint", "--strict", "ansible", ".yamllint", ".ansible-lint")
    assert result.returncode == 0, result.stdout


def test_site_playbook_syntax_is_valid():
    result = run(str(BIN / "ansible-playbook"), "--syntax-check", "-i", "localhost,", "ansible/site.yml")
    assert result.returncode == 0, result.stdout


def test_both_roles_are_there():
    assert ROLES == ["nginx_tls", "server_responder"]


@pytest.mark.parametrize("role", ROLES)
def test_public_variables_carry_the_role_name(role):
    assert [name for name in defaults(role) if not name.startswith(f"{role}_")] == []


@pytest.mark.parametrize("role", ROLES)
def test_internal_variables_are_marked_internal(role):
    internal = yaml.safe_load((ANSIBLE / "roles" / role / "vars" / "main.yml").read_text())
    assert [name for name in internal if not name.startswith(f"__{role}_")] == []


@pytest.mark.parametrize("role", ROLES)
def test_every_public_variable_is_typed(role):
    specs = argument_specs(role)
    assert sorted(specs) == sorted(defaults(role))
    assert [name for name, spec in specs.items() if "type" not in spec or "description" not in spec] == []


@pytest.mark.parametrize("role", ROLES)
def test_typed_defaults_match_the_defaults(role):
    specs = argument_specs(role)
    assert {name: spec.get("default") for name, spec in specs.items()} == defaults(role)


@pytest.mark.parametrize("role", ROLES)
def test_every_public_variable_is_documented(role):
    readme = (ANSIBLE / "roles" / role / "README.md").read_text()
    assert [name for name in defaults(role) if f"`{name}`" not in readme] == []


@pytest.mark.parametrize("template", sorted(str(path.relative_to(ANSIBLE)) for path in ANSIBLE.glob("roles/*/templates/*")))
def test_template_says_it_is_managed(template):
    lines = (ANSIBLE / template).read_text().splitlines()
    head = lines[1] if lines[0].startswith("#!") else lines[0]
    assert head.startswith("{{ ansible_managed | comment")
