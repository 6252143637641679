"""Stand-in for tests/infra while the roles are written."""


def test_python3_is_installed(host):
    assert host.package("python3").is_installed
