"""A freshly provisioned image, before user data: it holds no secret (run with --image)."""

import pytest

from appliance_host import (
    CONFIG_FILE, ENV_FILE, JOB_NETWORK_UNIT, SECRET_NAMES, SECRETS_DIR, TLS_CERTIFICATE, TLS_KEY, TOKEN_FILE, UNIT,
)

pytestmark = pytest.mark.image


@pytest.mark.parametrize("path", [TOKEN_FILE, ENV_FILE, TLS_KEY, TLS_CERTIFICATE])
def test_image_lacks(host, path):
    assert not host.file(path).exists


def test_image_has_no_secret_file(host):
    assert host.run(f"find {SECRETS_DIR} -type f").stdout.split() == []


def test_image_settings_name_no_secret(appliance):
    names = set(SECRET_NAMES) | {f"{name}_file" for name in SECRET_NAMES}
    assert names & set(appliance.config()) == set()


def test_image_settings_are_in_place(host):
    assert host.file(CONFIG_FILE).is_file


def test_image_service_is_enabled(host):
    assert host.service(UNIT).is_enabled


def test_image_service_is_stopped(host):
    assert not host.service(UNIT).is_running


def test_image_loads_the_job_network_rules_at_boot(host):
    assert host.service(JOB_NETWORK_UNIT).is_enabled


def test_image_makes_its_certificate_at_first_boot(host):
    assert host.service("nginx-tls-certificate").is_enabled
