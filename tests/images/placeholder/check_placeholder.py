"""Stand-in for tests/infra while the roles are written."""


def test_curl_is_installed(host):
    assert host.package("curl").is_installed
