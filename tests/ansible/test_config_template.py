"""The role's config.toml as Ansible renders it from the role's variables: queue mode's settings appear only when
set, as TOML the app reads."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "ansible" / "roles" / "server_responder"
BIN = Path(sys.executable).parent


def render(tmp_path: Path, **variables: object) -> dict:
    """config.toml.j2 rendered with the role's defaults and internal variables, and these."""
    target = tmp_path / "config.toml"
    playbook = tmp_path / "render.yml"
    playbook.write_text(json.dumps([{
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")],
        "tasks": [{"ansible.builtin.template": {"src": str(ROLE / "templates" / "config.toml.j2"),
                                                "dest": str(target), "mode": "0600"}}],
    }]))
    extra = {"playbook_dir": str(REPO / "ansible"), "ansible_python_interpreter": sys.executable, **variables}
    done = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", str(playbook), "-e", json.dumps(extra)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return tomllib.loads(target.read_text())


def test_queue_mode_settings_are_written_when_set(tmp_path):
    queue = "https://sqs.eu-west-1.amazonaws.com/123456789012/fleet-jobs"

    config = render(tmp_path, server_responder_queue_url=queue, server_responder_idle_action="leave-group",
                    server_responder_store="s3://fleet-results/fleet")

    assert config["queue_url"] == queue
    assert config["idle_action"] == "leave-group"
    assert config["store"] == "s3://fleet-results/fleet"


def test_queue_mode_settings_are_left_to_the_app_when_empty(tmp_path):
    config = render(tmp_path)

    assert "queue_url" not in config and "idle_action" not in config
    assert config["idle_shutdown_minutes"] == 15
