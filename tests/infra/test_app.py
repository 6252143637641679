"""The app in its venv, installed from the wheelhouse built on the controller."""

import pytest

from appliance_host import INSTALL_DIR, VENV


def test_venv_imports_the_app(host):
    assert host.run(f"{VENV}/bin/python -c 'import server_responder'").rc == 0


def test_command_is_on_the_path(host):
    assert host.run("server-responder --help").rc == 0


def test_command_is_the_venvs(host):
    assert host.file("/usr/local/bin/server-responder").linked_to == f"{VENV}/bin/server-responder"


def test_installed_wheelhouse_is_the_copied_one(host):
    assert host.run(f"cmp {INSTALL_DIR}/wheelhouse/MANIFEST {VENV}/.wheelhouse-manifest").rc == 0


def test_every_language_has_its_interpreter(host, appliance):
    languages = appliance.config()["languages"]
    missing = [argv[0] for argv in languages.values() if host.run(f"command -v {argv[0]}").rc != 0]
    assert missing == []


def test_config_command_shows_no_secret(host, appliance):
    token = appliance.token()
    shown = host.check_output("server-responder config")
    assert token not in shown


@pytest.mark.parametrize("setting", ["host", "port"])
def test_app_listens_on_loopback(appliance, setting):
    assert appliance.config()[setting] == {"host": "127.0.0.1", "port": 8080}[setting]
