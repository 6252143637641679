"""Every route of the core against a real responder process."""

import json
import os
import socket
import urllib.parse
from pathlib import Path

import pytest

from server_responder.signing import sign_script
from server_responder.web.app import api_routes

CODE_SECRET = "example-code-secret"


def files_below(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")} if path.exists() else set()


def raw_request(url: str, raw_path: str) -> tuple[int, bytes]:
    """Send a path exactly as given, without any client normalising `..` away."""
    host, port = urllib.parse.urlsplit(url).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(f"GET {raw_path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := connection.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_sync_job_returns_the_finished_job(responder):
    answer = responder.request("POST", "/jobs?wait=20", body={"script": "import sys\nprint(5 + 4)\nsys.exit(3)"})
    assert answer.status == 200
    job = answer.json()
    assert (job["status"], job["exit_status"], job["stdout"]) == ("failed", 3, "9\n")
    assert len(job["id"]) == 40
    for key in ("id", "type", "status", "exit_status", "signal", "stdout", "stderr", "output", "truncated",
                "created_at", "started_at", "finished_at", "duration_s", "results_location", "artifacts"):
        assert key in job


def test_async_job_is_accepted_then_polled_without_the_token(responder):
    answer = responder.request("POST", "/jobs", body={"script": "import time; time.sleep(0.5); print('done')"})
    assert answer.status == 202
    job = answer.json()
    assert job["status"] in ("queued", "running")
    assert answer.headers["Location"] == f"/jobs/{job['id']}"
    finished = responder.wait_for(job["id"])
    assert finished["status"] == "succeeded" and finished["stdout"] == "done\n"


def test_result_document_and_artifacts_are_stored(responder):
    script = ("import os\nos.makedirs('artifacts/sub', exist_ok=True)\n"
              "open('artifacts/report.txt', 'w').write('hello')\nopen('artifacts/sub/data.json', 'w').write('{}')\n"
              "os.symlink('/etc/passwd', 'artifacts/passwd')\nprint('made')")
    job = responder.submit(script, results_location="reports/run-1")
    assert job["status"] == "succeeded", (job["stderr"], job["error"])
    assert {a["name"] for a in job["artifacts"]} == {"report.txt", "sub/data.json"}
    document = responder.request("GET", "/results/reports/run-1").json()
    assert document["results"] == "made\n" and document["exit_status"] == 0 and document["job_id"] == job["id"]
    for key in ("cmd_run", "stdout", "stderr", "truncated", "timed_out", "started_at", "finished_at",
                "duration_s", "artifacts"):
        assert key in document
    artifact = responder.request("GET", "/results/reports/run-1_artifact_files_report.txt")
    assert artifact.body == b"hello" and artifact.headers["Content-Type"].startswith("text/plain")
    index = responder.request("GET", "/results/reports/run-1_artifact_files").json()
    assert [entry["key"] for entry in index] == ["reports/run-1_artifact_files_report.txt",
                                                 "reports/run-1_artifact_files_sub/data.json"]


def test_results_answer_202_while_the_job_is_pending_and_404_when_unknown(make_responder):
    responder = make_responder(workers=1)
    responder.request("POST", "/jobs", body={"script": "import time; time.sleep(1.5)", "results_location": "slow"})
    pending = responder.request("GET", "/results/slow")
    assert pending.status == 202 and pending.json()["not_complete"] is True
    assert responder.request("GET", "/results/never/written").status == 404


def test_timeout_ends_the_job_as_timed_out_with_partial_output(responder):
    job = responder.submit("import time\nprint('partial', flush=True)\ntime.sleep(30)", timeout=1, wait=20)
    assert job["status"] == "timed_out" and job["timed_out"] is True
    assert job["stdout"] == "partial\n"


def test_cancel_a_running_job(responder):
    job = responder.request("POST", "/jobs", body={"script": "import time; time.sleep(30)"}).json()
    assert responder.wait_until_running(job["id"])["status"] == "running"
    assert responder.request("DELETE", f"/jobs/{job['id']}").status in (200, 202)
    assert responder.wait_for(job["id"])["status"] == "cancelled"
    assert responder.request("DELETE", f"/jobs/{job['id']}", token=False).status == 401


def test_list_jobs_needs_the_token(responder):
    job = responder.submit("print(1)")
    assert responder.request("GET", "/jobs", token=False).status == 401
    listed = responder.request("GET", "/jobs").json()
    assert job["id"] in [entry["id"] for entry in listed["jobs"]]
    assert "stdout" not in listed["jobs"][0]


def test_job_environment_has_no_token_and_no_aws_variables(make_responder):
    responder = make_responder(api_key="the-api-token-value-1234")
    responder.env["AWS_SECRET_ACCESS_KEY"] = "not-for-jobs"
    job = responder.submit("import os, json; print(json.dumps(dict(os.environ)))", env={"MINE": "yes"})
    seen = json.loads(job["stdout"])
    assert seen["MINE"] == "yes"
    assert not [name for name in seen if name.startswith(("AWS_", "SERVER_RESPONDER_"))]
    assert "the-api-token-value-1234" not in job["stdout"]


def test_signed_script_runs_without_the_token(make_responder):
    responder = make_responder(code_secret=CODE_SECRET)
    signed = sign_script(CODE_SECRET, "print(5 + 4)", "python", "examples/nine", expires_in=60)
    answer = responder.request("POST", "/jobs?wait=20", body=signed.as_fields(), token=False)
    assert answer.status == 200, answer.body
    assert answer.json()["stdout"] == "9\n"
    assert answer.json()["results_location"] == "examples/nine"


@pytest.mark.parametrize("tamper", [
    {"results_location": "somewhere/else"}, {"language": "bash"}, {"script": "print(6)"},
    {"expires": 4102444800}, {"env": {"X": "1"}},
])
def test_signed_script_cannot_be_changed(make_responder, tamper):
    responder = make_responder(code_secret=CODE_SECRET)
    signed = sign_script(CODE_SECRET, "print(5 + 4)", "python", "examples/nine", expires_in=60)
    answer = responder.request("POST", "/jobs", body={**signed.as_fields(), **tamper}, token=False)
    assert answer.status in (400, 401)
    assert answer.json()["error"] in ("bad_request", "unauthorized")


def test_expired_signature_is_refused(make_responder):
    responder = make_responder(code_secret=CODE_SECRET)
    signed = sign_script(CODE_SECRET, "print(1)", "python", expires_in=-5)
    answer = responder.request("POST", "/jobs", body=signed.as_fields(), token=False)
    assert answer.status == 401 and "expired" in answer.json()["detail"]


def form(fields: dict) -> bytes:
    return urllib.parse.urlencode(fields).encode()


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def post_form_with_token(responder, payload: dict):
    """The original protocol's POST / with the API token as a form field."""
    fields = form({"api_token": responder.token, "payload": json.dumps(payload)})
    return responder.request("POST", "/", data=fields, headers=FORM, token=False)


def test_form_protocol_with_api_token(responder):
    payload = json.dumps({"script_payload": "print(5 + 4)", "language": "python", "results_location": "form/one"})
    answer = responder.request("POST", "/", data=form({"api_token": responder.token, "payload": payload}),
                               headers=FORM, token=False)
    assert answer.status == 200
    body = answer.json()
    assert body["results"] == "9\n" and body["exit_status"] == 0 and body["results_location"] == "form/one"


def test_form_protocol_answers_202_past_the_sync_wait(make_responder):
    responder = make_responder(sync_wait_seconds=0.2)
    payload = json.dumps({"script_payload": "import time; time.sleep(2)", "language": "python"})
    answer = responder.request("POST", "/", data=form({"api_token": responder.token, "payload": payload}),
                               headers=FORM, token=False)
    assert answer.status == 202
    assert answer.json()["not_complete"] is True
    assert responder.wait_for(answer.json()["job_id"])["status"] == "succeeded"


def test_form_protocol_bad_token_is_401_json(responder):
    payload = json.dumps({"script_payload": "print(1)", "language": "python"})
    answer = responder.request("POST", "/", data=form({"api_token": "wrong", "payload": payload}), headers=FORM,
                               token=False)
    assert answer.status == 401 and answer.json()["error"] == "unauthorized"
    assert "does not match" in answer.json()["detail"]
    none_sent = responder.request("POST", "/", data=form({"payload": payload}), headers=FORM, token=False)
    assert none_sent.status == 401 and none_sent.json()["detail"] == "api_token or signature is required"
    wrong_bearer = responder.request("POST", "/", data=form({"payload": payload}), headers=FORM, token="wrong")
    assert wrong_bearer.status == 401 and "does not match" in wrong_bearer.json()["detail"]


def test_form_protocol_script_under_the_wrong_name_says_where_it_goes(responder):
    answer = post_form_with_token(responder, {"script": "puts 5 + 4"})
    assert answer.status == 400, answer.body
    assert answer.json()["field"] == "payload.script"
    assert "payload.script_payload" in answer.json()["detail"] and "push" not in answer.json()["detail"]


def test_form_protocol_scripts_are_ruby_unless_they_say_otherwise(responder):
    answer = post_form_with_token(responder, {"script_payload": "puts (5+4)"})
    assert answer.status == 200, answer.body
    assert answer.json()["results"] == "9\n"


@pytest.mark.parametrize("languages", [
    {"python": ["python3"]},
    {"python": ["python3"], "ruby": ["no-such-ruby-interpreter"]},
])
def test_form_protocol_default_language_that_cannot_run_is_400_saying_what_to_set(make_responder, languages):
    responder = make_responder(languages=languages)
    answer = post_form_with_token(responder, {"script_payload": "puts 1"})
    assert answer.status == 400, answer.body
    document = answer.json()
    assert document["field"] == "payload.language"
    assert "legacy_script_language (ruby)" in document["detail"] and "python" in document["detail"]
    assert responder.request("GET", "/jobs").json()["jobs"] == []


def test_a_language_whose_interpreter_is_missing_is_400_not_a_failed_job(make_responder):
    responder = make_responder(languages={"python": ["python3"], "ruby": ["/nowhere/bin/ruby"]})
    answer = responder.request("POST", "/jobs", body={"script": "puts 1", "language": "ruby"})
    assert answer.status == 400, answer.body
    assert answer.json()["field"] == "language"
    assert "/nowhere/bin/ruby is not installed" in answer.json()["detail"]
    assert "available: python" not in answer.json()["detail"] and "python" in answer.json()["detail"]


def test_form_protocol_with_signed_script(make_responder):
    responder = make_responder(code_secret=CODE_SECRET)
    signed = sign_script(CODE_SECRET, "print(2 + 2)", "python", None, expires_in=60)
    payload = json.dumps({"script_payload": signed.script, "language": "python", "expires": signed.expires})
    answer = responder.request("POST", "/", data=form({"signature": signed.signature, "payload": payload}),
                               headers=FORM, token=False)
    assert answer.status == 200 and answer.json()["results"] == "4\n"


def test_legacy_signatures_only_when_enabled(make_responder):
    from server_responder.signing import legacy_signature

    script = "print(3 * 3)"
    fields = {"signature": legacy_signature(CODE_SECRET, script),
              "payload": json.dumps({"script_payload": script, "language": "python"})}
    strict = make_responder(code_secret=CODE_SECRET)
    refused = strict.request("POST", "/", data=form(fields), headers=FORM, token=False)
    assert refused.status == 401 and "legacy" in refused.json()["detail"]
    lenient = make_responder(code_secret=CODE_SECRET, accept_legacy_signatures="true")
    accepted = lenient.request("POST", "/", data=form(fields), headers=FORM, token=False)
    assert accepted.status == 200 and accepted.json()["results"] == "9\n"


def test_form_protocol_dispatches_project_requests_to_their_own_fields(responder):
    payload = json.dumps({"project": "owner/name", "project_request": "no-leading-slash"})
    answer = responder.request("POST", "/", data=form({"api_token": responder.token, "payload": payload}),
                               headers=FORM, token=False)
    assert answer.status == 400
    assert answer.json()["field"] == "project_request"


@pytest.mark.parametrize(("body", "field"), [
    ({}, "script"),
    ({"script": ""}, "script"),
    ({"script": 5}, "script"),
    ({"script": "print(1)", "language": "cobol"}, "language"),
    ({"script": "print(1)", "timeout": -1}, "timeout"),
    ({"script": "print(1)", "timeout": 10**9}, "timeout"),
    ({"script": "print(1)", "timeout": "soon"}, "timeout"),
    ({"script": "print(1)", "env": {"BAD NAME": "x"}}, "env"),
    ({"script": "print(1)", "env": ["x"]}, "env"),
    ({"script": "print(1)", "surprise": 1}, "surprise"),
    ({"type": "teleport"}, "type"),
])
def test_bad_fields_answer_400_naming_the_field(responder, body, field):
    answer = responder.request("POST", "/jobs", body=body)
    assert answer.status == 400
    assert answer.json()["field"] == field
    assert field in answer.json()["detail"]


def test_unknown_language_lists_the_available_ones(responder):
    detail = responder.request("POST", "/jobs", body={"script": "x", "language": "cobol"}).json()["detail"]
    assert "python" in detail


@pytest.mark.parametrize("data", [b"{not json", b"[1, 2]", b"", b"\xff\xfe"])
def test_malformed_json_is_400(responder, data):
    answer = responder.request("POST", "/jobs", data=data, headers={"Content-Type": "application/json"})
    assert answer.status == 400
    assert answer.json()["error"] == "bad_request"


def test_missing_token_is_401(responder):
    answer = responder.request("POST", "/jobs", body={"script": "print(1)"}, token=False)
    assert answer.status == 401 and "required" in answer.json()["detail"]
    wrong = responder.request("POST", "/jobs", body={"script": "print(1)"}, token="wrong")
    assert wrong.status == 401 and "does not match" in wrong.json()["detail"]
    assert "required" in responder.request("GET", "/jobs", token=False).json()["detail"]
    assert "does not match" in responder.request("GET", "/jobs", token="wrong").json()["detail"]


def test_unknown_route_is_404_and_wrong_method_is_405(responder):
    assert responder.request("GET", "/nowhere").status == 404
    assert responder.request("GET", "/jobs/" + "0" * 40).status == 404
    answer = responder.request("PUT", "/health", data=b"")
    assert answer.status == 405 and answer.headers["Allow"] == "GET"
    assert answer.json()["error"] == "method_not_allowed"


def test_body_over_the_limit_is_413(make_responder):
    responder = make_responder(max_body_bytes=2048)
    answer = responder.request("POST", "/jobs", body={"script": "#" * 5000})
    assert answer.status == 413 and answer.json()["error"] == "payload_too_large"


def test_full_queue_answers_429_with_retry_after(make_responder):
    responder = make_responder(workers=1, queue_size=1)
    slow = {"script": "import time; time.sleep(5)"}
    running = responder.request("POST", "/jobs", body=slow).json()
    responder.wait_until_running(running["id"])
    assert responder.request("POST", "/jobs", body=slow).status == 202
    answer = responder.request("POST", "/jobs", body=slow)
    assert answer.status == 429 and int(answer.headers["Retry-After"]) > 0
    assert answer.json()["error"] == "queue_full"


@pytest.mark.parametrize("location", ["../escape", "/etc/cron.d/x", "a/../../b", "a/./b", "has space", "x" * 600,
                                      "back\\slash", "new\nline"])
def test_traversal_and_odd_results_locations_are_400_and_write_nothing(responder, location):
    before = files_below(responder.data_dir.parent)
    answer = responder.request("POST", "/jobs", body={"script": "print(1)", "results_location": location})
    assert answer.status == 400 and answer.json()["field"] == "results_location"
    # Nothing was accepted, so nothing can write later: the files now are the files for good.
    assert responder.request("GET", "/jobs").json()["jobs"] == []
    after = files_below(responder.data_dir.parent)
    assert {p for p in after - before if not p.startswith("logs")} == set()


@pytest.mark.parametrize("raw_path", ["/results/../../etc/passwd", "/results/%2e%2e/%2e%2e/etc/passwd",
                                      "/results/a/%2e%2e/b", "/results/a%00b"])
def test_traversal_in_result_paths_never_escapes(responder, raw_path):
    status, body = raw_request(responder.url, raw_path)
    assert status in (400, 401, 404)
    assert b"root:" not in body


def test_traversal_in_result_key_with_token_is_400(responder):
    answer = responder.request("GET", "/results/a/%2e%2e/b")
    assert answer.status in (400, 404)
    assert b"root:" not in answer.body


def test_no_500_or_traceback_for_a_garbage_request(responder):
    status, body = raw_request(responder.url, "/jobs/%ff%fe")
    assert status == 404 and b"Traceback" not in body


def test_status_routes(responder):
    assert responder.request("GET", "/health", token=False).json()["status"] == "ok"
    index = responder.request("GET", "/index", token=False).json()
    assert isinstance(index, list) and "script" in [entry["type"] for entry in index]
    page = responder.request("GET", "/", token=False)
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    before = responder.request("GET", "/last_job", token=False).json()
    responder.submit("print(1)")
    after = responder.request("GET", "/last_job", token=False).json()
    assert after["last_time"] is not None and after["last_time"] >= (before["last_time"] or "")
    assert after["running_jobs"] == 0 and after["queued_jobs"] == 0


def test_last_job_survives_a_restart(responder):
    responder.submit("print(1)")
    recorded = responder.request("GET", "/last_job", token=False).json()["last_time"]
    responder.stop()
    responder.start()
    assert responder.request("GET", "/last_job", token=False).json()["last_time"] == recorded


def test_openapi_describes_exactly_the_served_routes(responder):
    document = responder.request("GET", "/openapi.json", token=False).json()
    assert document["openapi"].startswith("3.1")
    described = {(method.upper(), path) for path, operations in document["paths"].items() for method in operations}
    served = {(route.method, route.pattern.replace(":path}", "}")) for route in api_routes(_Stub())}
    assert described == served


class _Stub:
    """Enough of a Responder to list routes without starting anything."""

    def __getattr__(self, name):
        return _Stub()


def test_queued_jobs_survive_a_crash_and_running_ones_are_interrupted(make_responder, tmp_path):
    responder = make_responder(workers=1)
    marker = tmp_path / "ran"
    running = responder.request("POST", "/jobs", body={"script": "import time; time.sleep(30)",
                                                       "results_location": "crash/running"}).json()
    queued = [responder.request("POST", "/jobs", body={
        "script": f"open({str(marker)!r} + '-{n}', 'w').write('x'); print({n})"}).json() for n in range(3)]
    assert responder.wait_until_running(running["id"])["status"] == "running"
    assert [responder.request("GET", f"/jobs/{job['id']}").json()["status"] for job in queued] == ["queued"] * 3
    responder.kill()
    responder.start()
    for n, job in enumerate(queued):
        finished = responder.wait_for(job["id"])
        assert finished["status"] == "succeeded" and finished["stdout"] == f"{n}\n"
    interrupted = responder.request("GET", f"/jobs/{running['id']}", token=False).json()
    assert interrupted["status"] == "interrupted"
    document = responder.request("GET", "/results/crash/running").json()
    assert document["status"] == "interrupted"


def test_graceful_stop_keeps_queued_jobs(make_responder):
    responder = make_responder(workers=1)
    running = responder.request("POST", "/jobs", body={"script": "import time; time.sleep(30)"}).json()
    waiting = responder.request("POST", "/jobs", body={"script": "print('later')"}).json()
    assert responder.wait_until_running(running["id"])["status"] == "running"
    assert responder.request("GET", f"/jobs/{waiting['id']}").json()["status"] == "queued"
    assert responder.stop() == 0
    responder.start()
    assert responder.wait_for(waiting["id"])["stdout"] == "later\n"


def test_logs_are_json_with_job_events_and_no_secrets(make_responder):
    responder = make_responder(api_key="super-secret-api-token-123", code_secret=CODE_SECRET)
    job = responder.submit("print(1)")
    form_fields = form({"api_token": "super-secret-api-token-123",
                        "payload": json.dumps({"script_payload": "print(1)", "language": "python"})})
    responder.request("POST", "/?api_token=super-secret-api-token-123", data=form_fields, headers=FORM,
                      token=False)
    responder.stop()
    lines = responder.log_file.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    events = {(r.get("event"), r.get("job_id")) for r in records}
    for event in ("job.accepted", "job.started", "job.finished"):
        assert (event, job["id"]) in events
    finished = next(r for r in records if r.get("event") == "job.finished" and r.get("job_id") == job["id"])
    assert finished["exit_status"] == 0 and finished["type"] == "script" and "duration_s" in finished
    assert any(r["logger"] == "cherrypy.access" for r in records)
    text = responder.log_file.read_text()
    assert "super-secret-api-token-123" not in text and CODE_SECRET not in text


def test_every_log_line_is_utc_and_each_request_is_one_access_line_of_fields(responder):
    import datetime
    import re

    started = datetime.datetime.now(datetime.timezone.utc)
    assert responder.request("GET", "/health", headers={"X-Request-Id": "probe-health"}).status == 200
    assert responder.request("GET", "/no/such/route?api_token=leaky-value", token=False).status == 404
    # A request the HTTP server answers itself, before any route sees it.
    host, port = urllib.parse.urlsplit(responder.url).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(b"GET /health HTTP/1.1\r\n\r\n")
        assert connection.recv(65536).startswith(b"HTTP/1.1 400 ")
    assert responder.stop() == 0
    finished = datetime.datetime.now(datetime.timezone.utc)
    records = [json.loads(line) for line in responder.log_file.read_text().splitlines()]
    assert len(records) > 5
    for record in records:
        stamp = record["time"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp), record
        moment = datetime.datetime.fromisoformat(stamp[:-1] + "+00:00")
        assert started - datetime.timedelta(seconds=30) <= moment <= finished, record
        # CherryPy's Apache-style times are gone from the messages too.
        assert not re.search(r"\[\d\d/\w{3}/\d{4}:", record["message"]), record
    access = [r for r in records if r.get("event") == "http.request"]
    assert {r["logger"] for r in access} == {"cherrypy.access"}
    assert not [r for r in records if r["logger"].startswith("cherrypy.access.")]
    health = next(r for r in access if r["request_id"] == "probe-health")
    assert health["message"] == "GET /health 200"
    assert (health["method"], health["path"], health["status"], health["remote"]) == (
        "GET", "/health", 200, "127.0.0.1")
    assert isinstance(health["bytes"], int) and health["bytes"] > 0
    assert isinstance(health["duration_ms"], float) and health["duration_ms"] >= 0
    missing = next(r for r in access if r["path"] == "/no/such/route")
    assert missing["status"] == 404 and "leaky-value" not in json.dumps(missing)
    refused = next(r for r in access if r["status"] == 400)
    assert (refused["method"], refused["path"], refused["remote"]) == ("GET", "/health", "127.0.0.1")
    assert refused["bytes"] > 0 and len(refused["request_id"]) == 16 and refused["duration_ms"] >= 0
    # No request is logged in the combined log format.
    assert not [r for r in access if '"' in r["message"] or " - - " in r["message"]]


def test_a_connection_the_server_refuses_by_itself_is_an_access_line_too(make_responder):
    import time

    responder = make_responder(max_connections_per_client=1)
    host, port = urllib.parse.urlsplit(responder.url).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as held:
        held.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert held.recv(65536).startswith(b"HTTP/1.1 200 ")
        with socket.create_connection((host, int(port)), timeout=10) as over:
            assert over.recv(65536).startswith(b"HTTP/1.1 503 ")
    deadline = time.monotonic() + 10
    while True:
        lines = [json.loads(line) for line in responder.log_file.read_text().splitlines()]
        refused = [r for r in lines if r.get("event") == "http.request" and r["status"] == 503]
        if refused:
            break
        assert time.monotonic() < deadline, "the refused connection was not logged"
        time.sleep(0.05)
    (line,) = refused
    assert line["logger"] == "cherrypy.access" and line["remote"] == "127.0.0.1" and line["bytes"] > 0
    assert line["time"].endswith("Z") and line["message"] == "- - 503"


def test_generated_token_is_stored_with_mode_0600(responder):
    token_file = responder.data_dir / "api_token"
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    assert len(token_file.read_text().strip()) >= 32
    assert any(str(token_file) in line for line in responder.output)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_jobs_run_as_the_job_user(make_responder):
    import shutil
    import tempfile

    # pytest's own temporary directories are private to root; a job user must be able to reach its work dir.
    base = Path(tempfile.mkdtemp(prefix="sr-job-user-"))
    base.chmod(0o711)
    responder = make_responder(base=base, job_user="nobody")
    job = responder.submit("import os\nos.makedirs('artifacts', exist_ok=True)\n"
                           "open('artifacts/who.txt', 'w').write(str(os.getuid()))\nprint(os.getuid())")
    import pwd

    assert job["status"] == "succeeded", (job["stderr"], job["error"])
    assert job["stdout"].strip() == str(pwd.getpwnam("nobody").pw_uid)
    assert [a["name"] for a in job["artifacts"]] == ["who.txt"]
    secrets = responder.submit(f"print(open({str(responder.data_dir / 'api_token')!r}).read())")
    assert secrets["status"] == "failed" and "Permission denied" in secrets["stderr"]
    responder.stop()
    shutil.rmtree(base)
