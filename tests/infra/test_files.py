"""Where the appliance lives, who owns it and who may read it."""

import pytest

from appliance_host import (
    CONFIG_DIR, CONFIG_FILE, DATA_DIR, INSTALL_DIR, JOB_USER, LOG_DIR, SECRETS_DIR, SERVICE_USER, TLS_CERTIFICATE,
    TLS_KEY, VENV,
)

LAYOUT = [
    # path, kind, owner, group, mode
    (INSTALL_DIR, "directory", "root", "root", 0o755),
    (VENV, "directory", "root", "root", 0o755),
    (f"{INSTALL_DIR}/wheelhouse", "directory", "root", "root", 0o755),
    (LOG_DIR, "directory", SERVICE_USER, SERVICE_USER, 0o750),
    (CONFIG_DIR, "directory", SERVICE_USER, SERVICE_USER, 0o700),
    (CONFIG_FILE, "file", SERVICE_USER, SERVICE_USER, 0o600),
    (SECRETS_DIR, "directory", SERVICE_USER, SERVICE_USER, 0o700),
    (DATA_DIR, "directory", SERVICE_USER, JOB_USER, 0o710),
    (f"{DATA_DIR}/work", "directory", SERVICE_USER, JOB_USER, 0o710),
    ("/etc/systemd/system/server-responder.service", "file", "root", "root", 0o644),
    ("/etc/polkit-1/rules.d/50-server-responder-poweroff.rules", "file", "root", "root", 0o644),
    ("/etc/nginx/tls", "directory", "root", "root", 0o700),
]
RUNNING_LAYOUT = [
    (TLS_KEY, "file", "root", "root", 0o600),
    (TLS_CERTIFICATE, "file", "root", "root", 0o644),
]


def describe(host, path):
    target = host.file(path)
    if not target.exists:
        return "missing"
    kind = "directory" if target.is_directory else "file" if target.is_file else "other"
    return kind, target.user, target.group, target.mode


@pytest.mark.parametrize(("path", "kind", "owner", "group", "mode"), LAYOUT + RUNNING_LAYOUT)
def test_path(host, path, kind, owner, group, mode):
    assert describe(host, path) == (kind, owner, group, mode)


@pytest.mark.image
@pytest.mark.parametrize(("path", "kind", "owner", "group", "mode"), LAYOUT)
def test_image_path(host, path, kind, owner, group, mode):
    assert describe(host, path) == (kind, owner, group, mode)


def test_a_secret_file_holds_the_token(appliance):
    # The token comes from user data, the role's secrets or the generated file: at least one is present.
    assert appliance.secret_files()


def test_secret_files_belong_to_the_service_user_alone(host, appliance):
    owners = {path: describe(host, path)[1:] for path in appliance.secret_files()}
    assert owners == {path: (SERVICE_USER, SERVICE_USER, 0o600) for path in owners}


def test_job_user_can_read_no_secret_file(appliance):
    assert [path for path in appliance.secret_files() if appliance.can_read_as_job_user(path)] == []


@pytest.mark.parametrize("path", [CONFIG_DIR, CONFIG_FILE, SECRETS_DIR, DATA_DIR, f"{DATA_DIR}/results", LOG_DIR,
                                  f"{LOG_DIR}/server-responder.log", TLS_KEY])
def test_job_user_cannot_read(appliance, path):
    assert not appliance.can_read_as_job_user(path)


def test_job_user_cannot_read_the_service_environment(appliance):
    assert not appliance.can_read_as_job_user(f"/proc/{appliance.service_pid()}/environ")
