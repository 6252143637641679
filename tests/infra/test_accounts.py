"""The service user and the job user."""

import pytest

from appliance_host import JOB_USER, SERVICE_USER


@pytest.mark.parametrize("name", [SERVICE_USER, JOB_USER])
def test_user_exists(host, name):
    assert host.user(name).exists


@pytest.mark.parametrize("name", [SERVICE_USER, JOB_USER])
def test_user_is_a_system_account(host, name):
    assert host.user(name).uid < 1000


@pytest.mark.parametrize("name", [SERVICE_USER, JOB_USER])
def test_user_cannot_log_in(host, name):
    assert host.user(name).shell == "/usr/sbin/nologin"


@pytest.mark.parametrize("name", [SERVICE_USER, JOB_USER])
def test_user_has_a_group_of_its_own(host, name):
    assert host.user(name).group == name


def test_service_user_is_in_the_job_users_group(host):
    # The service hands each job's working directory to that group.
    assert JOB_USER in host.user(SERVICE_USER).groups


def test_job_user_is_in_no_other_group(host):
    assert host.user(JOB_USER).groups == [JOB_USER]
