import dataclasses
import json
import re
from pathlib import Path

import pytest

from server_responder.cli import main
from server_responder.settings import Secret, Settings, SettingsError


def test_toml_file_is_overridden_by_environment(tmp_path: Path):
    config = tmp_path / "config.toml"
    config.write_text('port = 9000\nworkers = 3\n[languages]\npython = ["python3", "-I"]\n')
    settings = Settings.from_env({"SERVER_RESPONDER_PORT": "9100", "SERVER_RESPONDER_DATA_DIR": str(tmp_path)},
                                 config)
    assert settings.port == 9100
    assert settings.workers == 3
    assert settings.languages == {"python": ("python3", "-I")}
    assert settings.store == str(tmp_path / "results")


def test_secret_from_file_setting(tmp_path: Path):
    secret_file = tmp_path / "code_secret"
    secret_file.write_text("s3cr3t-value\n")
    settings = Settings.from_env({"SERVER_RESPONDER_CODE_SECRET_FILE": str(secret_file),
                                  "SERVER_RESPONDER_DATA_DIR": str(tmp_path)})
    assert settings.code_secret == Secret("s3cr3t-value")
    assert "s3cr3t-value" not in repr(settings)


def test_original_variable_names_are_kept(tmp_path: Path):
    settings = Settings.from_env({"SERVER_RESPONDER_API_KEY": "k" * 20, "SERVER_RESPONDER_ADMIN_PASS": "pw",
                                  "SERVER_RESPONDER_DATA_DIR": str(tmp_path)})
    assert settings.api_key.reveal() == "k" * 20
    assert settings.admin_pass.reveal() == "pw"


@pytest.mark.parametrize(("name", "value", "named"), [
    ("PORT", "eighty", "port"),
    ("PORT", "70000", "port"),
    ("WORKERS", "0", "workers"),
    ("ACCEPT_LEGACY_SIGNATURES", "maybe", "accept_legacy_signatures"),
    ("STORE", "ftp://somewhere", "store"),
    ("JOB_USER", "no-such-user-here", "job_user"),
    ("LANGUAGES", '{"python": []}', "languages"),
    ("CALLBACK_URL", "file:///etc/passwd", "callback_url"),
    ("MAX_EVENT_STREAMS", "32", "max_event_streams"),
    ("EVENT_KEEPALIVE_SECONDS", "0", "event_keepalive_seconds"),
    ("METRICS_PUBLIC", "maybe", "metrics_public"),
    ("IDLE_ACTION", "terminate", "idle_action"),
    ("INSTANCE_ID", "my-box", "instance_id"),
    ("QUEUE_URL", "sqs://jobs", "queue_url"),
    ("QUEUE_WAIT_SECONDS", "30", "queue_wait_seconds"),
    ("QUEUE_VISIBILITY_TIMEOUT", "1", "queue_visibility_timeout"),
    ("QUEUE_HEARTBEAT_SECONDS", "500", "queue_heartbeat_seconds"),
])
def test_invalid_settings_are_refused_naming_the_key(tmp_path: Path, name, value, named):
    with pytest.raises(SettingsError, match=f"^{named}:"):
        Settings.from_env({f"SERVER_RESPONDER_{name}": value, "SERVER_RESPONDER_DATA_DIR": str(tmp_path)})


def test_unknown_key_in_file_is_refused(tmp_path: Path):
    config = tmp_path / "config.toml"
    config.write_text("prot = 80\n")
    with pytest.raises(SettingsError, match="^prot: unknown setting"):
        Settings.from_env({}, config)


def test_serve_refuses_to_start_on_invalid_settings(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("SERVER_RESPONDER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SERVER_RESPONDER_QUEUE_SIZE", "none")
    assert main(["serve", "--port", "0"]) == 2
    assert "queue_size" in capsys.readouterr().err


def test_config_command_redacts_secrets(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("SERVER_RESPONDER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SERVER_RESPONDER_API_KEY", "very-secret-token-value")
    monkeypatch.setenv("SERVER_RESPONDER_CODE_SECRET", "another-secret-value")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    shown = json.loads(out)
    assert shown["api_key"] == "<set>"
    assert shown["admin_pass"] == "<unset>"
    assert "very-secret-token-value" not in out and "another-secret-value" not in out


def readme_settings_table() -> list[str]:
    """The first column of the README's settings table: every setting named there."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index("\n## Settings\n"):]
    section = section[:section.index("\n## ", 1)]
    return [row.split("|")[1] for row in section.splitlines() if row.startswith("| `")]


def test_every_setting_is_in_the_readme_settings_table():
    named = {name for cell in readme_settings_table() for name in re.findall(r"`([a-z0-9_]+)`", cell)}
    settings = {f.name for f in dataclasses.fields(Settings)}
    assert len(settings) > 40
    assert sorted(settings - named) == [], "settings missing from the README's settings table"
    assert sorted(named - settings) == [], "the README's settings table names settings that do not exist"
    # What `config` prints is exactly the settings.
    assert set(Settings(data_dir=Path("/nonexistent")).redacted()) == settings
