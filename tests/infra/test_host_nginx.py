"""nginx in front: TLS on 443, plain HTTP only redirecting."""

import pytest

from appliance_host import marker, wait_until


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


def test_a_jobs_events_pass_through_nginx_as_they_come(appliance, host):
    job = appliance.job("import time\nprint('first line', flush=True)\ntime.sleep(600)\n", timeout=900, wait=0)
    events = f"/root/events-{marker()}"
    appliance.follow(f"/jobs/{job['id']}/events", events)
    try:
        wait_until(lambda: host.file(events).exists and "first line" in host.file(events).content_string, 60,
                   "the job's first line through nginx")
        # Seen while the job still runs: nginx buffered nothing.
        assert appliance.job_state(job["id"])["status"] == "running"
    finally:
        appliance.request("DELETE", f"/jobs/{job['id']}")
    wait_until(lambda: "event: job" in host.file(events).content_string, 60, "the stream's last event")
    host.run(f"rm -f {events}")


def test_a_webhook_body_larger_than_other_requests_reaches_the_app(appliance):
    # 5 MB: over nginx's limit for other routes (2m), within the one for webhooks: the answer is the app's JSON
    # (a 404 where no github_secret is set), not nginx's 413.
    answer = appliance.request_of_size("POST", "/github", 5 * 1024 * 1024)
    assert isinstance(answer.body, dict) and answer.body.get("error"), answer
