"""nginx in front: TLS on 443, plain HTTP only redirecting."""

import pytest


def test_nginx_is_active(host):
    assert host.service("nginx").is_running


def test_nginx_is_enabled(host):
    assert host.service("nginx").is_enabled


def test_nginx_configuration_is_valid(host):
    assert host.run("nginx -t").rc == 0


@pytest.mark.parametrize("port", [443, 80])
def test_nginx_listens(host, port):
    assert host.socket(f"tcp://0.0.0.0:{port}").is_listening


def test_health_through_https(appliance):
    answer = appliance.request("GET", "/health", token=False)
    assert (answer.status, answer.body["status"]) == (200, "ok")


def test_plain_http_redirects_to_https(appliance):
    answer = appliance.request("GET", "/health?x=1", plain=True, token=False)
    assert (answer.status, answer.headers["Location"]) == (301, "https://localhost/health?x=1")


def test_https_sends_hsts(appliance):
    assert "max-age" in appliance.request("GET", "/health", token=False).headers["Strict-Transport-Security"]


def test_job_needs_the_token(appliance):
    answer = appliance.request("POST", "/jobs", {"type": "script", "language": "python", "script": "print(1)"},
                               token=False)
    assert answer.status == 401
