"""GET /metrics against a real responder: Prometheus's own parser reads it, and its counts follow the jobs."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def scrape(responder, **options) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = responder.request("GET", "/metrics", **options)
    assert answer.status == 200, answer.body
    assert answer.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(answer.body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_counters_move_with_jobs(responder):
    before = scrape(responder)
    assert before[("server_responder_build_info",
                   (("version", responder.request("GET", "/health").json()["version"]),))] == 1
    assert before[("server_responder_draining", ())] == 0
    assert before[("server_responder_jobs_running", ())] == 0
    assert before[("server_responder_box_uptime_seconds", ())] > 0
    assert ("server_responder_jobs_accepted_total", (("type", "script"),)) not in before

    assert responder.submit("print('ok')")["status"] == "succeeded"
    assert responder.submit("import sys\nsys.exit(4)")["status"] == "failed"
    assert responder.submit("import sys\nsys.exit(0)")["status"] == "succeeded"
    after = scrape(responder)
    assert after[("server_responder_jobs_accepted_total", (("type", "script"),))] == 3
    assert after[("server_responder_jobs_finished_total", (("status", "succeeded"), ("type", "script")))] == 2
    assert after[("server_responder_jobs_finished_total", (("status", "failed"), ("type", "script")))] == 1
    assert after[("server_responder_job_duration_seconds_count", (("type", "script"),))] == 3
    assert after[("server_responder_job_duration_seconds_bucket", (("le", "+Inf"), ("type", "script")))] == 3
    assert after[("server_responder_job_duration_seconds_sum", (("type", "script"),))] > 0
    assert after[("server_responder_jobs_queued", ())] == 0
    assert after[("server_responder_uploads_pending", (("kind", "upload"),))] == 0


def test_draining_and_the_running_gauge(responder, tmp_path):
    gate = tmp_path / "gate"
    job = responder.submit(f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.01)", wait=0)
    responder.wait_until_running(job["id"])
    assert responder.request("POST", "/drain").status == 202
    samples = scrape(responder)
    assert samples[("server_responder_jobs_running", ())] == 1
    assert samples[("server_responder_draining", ())] == 1
    assert samples[("server_responder_idle_seconds", ())] == 0
    gate.touch()
    responder.wait_for(job["id"])
    responder.request("DELETE", "/drain")


def test_the_token_is_required_unless_metrics_public(make_responder):
    guarded = make_responder()
    answer = guarded.request("GET", "/metrics", token=False)
    assert answer.status == 401
    assert answer.json()["error"] == "unauthorized"
    assert guarded.request("GET", "/metrics", token="wrong").status == 401
    public = make_responder(metrics_public=True)
    assert ("server_responder_draining", ()) in scrape(public, token=False)
