"""Every route's answers, success and each documented error, checked against the served OpenAPI document."""

from __future__ import annotations

import base64
import json
import re
import time
import urllib.parse
import uuid
from pathlib import Path

from jsonschema import Draft202012Validator

from git_projects import GitProject
from server_responder.projects.github import sign
from server_responder.signing import sign_script

SECRET = "github-webhook-secret"
CODE_SECRET = "code-secret-for-pages"
ADMIN_PASS = "admin-password"
MAX_BODY = 64 * 1024
MAX_WEBHOOK_BODY = 2 * MAX_BODY
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
# Documented answers a test cannot provoke from a healthy box, each with why.
NOT_PROVOKED = {
    ("GET", "/results/{key}", "503"): "needs a remote store that is down (tests/integration/test_s3.py)",
    ("POST", "/jobs", "501"): "needs a job type in the table without an executor; Responder.create has none",
    ("POST", "/", "501"): "needs a job type in the table without an executor; Responder.create has none",
    ("POST", "/jobs", "507"): "needs a data dir that cannot be written (tests/integration/test_storage_faults.py)",
    ("POST", "/", "507"): "needs a data dir that cannot be written (tests/integration/test_storage_faults.py)",
    ("POST", "/github", "507"): "needs a data dir that cannot be written (tests/integration/test_storage_faults.py)",
    ("GET", "/jobs/{job_id}/events", "503"): "needs max_event_streams streams open (tests/integration/"
                                             "test_job_events.py)",
}


def start_box(make_responder, base: Path):
    project = GitProject(base / "git")
    sha = project.commit({"README": "x\n"})
    box = make_responder(workers=1, queue_size=1, github_secret=SECRET, code_secret=CODE_SECRET,
                         admin_pass=ADMIN_PASS, max_body_bytes=MAX_BODY, max_webhook_body_bytes=MAX_WEBHOOK_BODY,
                         repo_base_url=project.base_url, sync_wait_seconds=5)
    box.sha = sha
    return box


def template_of(document, method: str, path: str) -> str:
    for template in document["paths"]:
        pattern = "^" + re.sub(r"\\{key\\}", ".+", re.sub(r"\\{(?!key)[a-z_]+\\}", "[^/]+", re.escape(template))) + "$"
        if re.match(pattern, path) and method.lower() in document["paths"][template]:
            return template
    raise AssertionError(f"{method} {path} is not in the document")


def check(document, exercised, answer, method: str, path: str) -> None:
    """The answer's status is documented for the route, and its body has the documented type and schema."""
    template = template_of(document, method, urllib.parse.urlsplit(path).path)
    responses = document["paths"][template][method.lower()]["responses"]
    status = str(answer.status)
    assert status in responses, f"{method} {template} answered {status}, which is not documented"
    exercised.add((method, template, status))
    response = responses[status]
    if "$ref" in response:
        response = document["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    content = response.get("content", {})
    content_type = answer.headers.get("Content-Type", "").split(";")[0].strip()
    if "*/*" in content:
        return
    assert content_type in content, f"{method} {template} {status}: {content_type} is not documented ({content})"
    schema = content[content_type].get("schema")
    if schema is not None and content_type == "application/json":
        validator = Draft202012Validator({**schema, "components": document["components"]})
        errors = sorted(validator.iter_errors(json.loads(answer.body)), key=str)
        assert not errors, f"{method} {template} {status}: " + "; ".join(e.message for e in errors[:3])


def call(box, document, exercised, method: str, path: str, **options):
    answer = box.request(method, path, **options)
    check(document, exercised, answer, method, path)
    return answer


def gated(gate: Path) -> str:
    return f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.05)\nprint('done')"


def github(box, document, exercised, payload, *, event="push", delivery=None, signature=None):
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "X-GitHub-Event": event,
               "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
               "X-Hub-Signature-256": signature if signature is not None else sign(SECRET, body)}
    return call(box, document, exercised, "POST", "/github", data=body, headers=headers, token=False)


def push(box, sha=None):
    return {"ref": "refs/heads/main", "after": sha or box.sha, "repository": {"full_name": "acme/widget"}}


def exercise_status_routes_and_pages(box, document, exercised):
    for path in ("/health", "/last_job", "/index", "/openapi.json", "/", "/example", "/static/style.css",
                 "/static/app.css"):
        call(box, document, exercised, "GET", path, token=False)
    admin = base64.b64encode(f"admin:{ADMIN_PASS}".encode()).decode()
    call(box, document, exercised, "GET", "/admin", token=False, headers={"Authorization": f"Basic {admin}"})
    call(box, document, exercised, "GET", "/admin", token=False)
    call(box, document, exercised, "GET", "/metrics")
    call(box, document, exercised, "GET", "/metrics", token=False)


def check_index_against_request_schemas(box, document):
    index = box.request("GET", "/index", token=False).json()
    schemas = document["components"]["schemas"]
    described = [ref["$ref"].rsplit("/", 1)[1] for ref in schemas["JobRequest"]["oneOf"]]
    assert len(described) == len(index)
    for entry, name in zip(index, described, strict=True):
        assert set(entry["fields"]) == set(schemas[name]["properties"]) - {"type"}


def exercise_job_routes(box, document, exercised, tmp_path):
    done = call(box, document, exercised, "POST", "/jobs?wait=30", body={"script": "print(1)"}).json()
    call(box, document, exercised, "GET", f"/jobs/{done['id']}", token=False)
    call(box, document, exercised, "GET", "/jobs/" + "0" * 40, token=False)
    call(box, document, exercised, "GET", f"/jobs/{done['id']}/events", token=False)
    call(box, document, exercised, "GET", "/jobs/" + "0" * 40 + "/events", token=False)
    call(box, document, exercised, "GET", f"/jobs/{done['id']}/events", token=False, headers={"Last-Event-ID": "x"})
    call(box, document, exercised, "GET", "/jobs?limit=5")
    call(box, document, exercised, "GET", "/jobs?limit=5000")
    call(box, document, exercised, "GET", "/jobs", token=False)
    call(box, document, exercised, "POST", "/jobs", body={"script": ""})
    call(box, document, exercised, "POST", "/jobs", body={"script": "print(1)"}, token=False)
    call(box, document, exercised, "POST", "/jobs", data=b"x", headers={"Content-Type": "text/plain"})
    call(box, document, exercised, "POST", "/jobs", body={"script": "x" * (MAX_BODY + 1)})
    signed = sign_script(CODE_SECRET, "print(2)", "python", None, expires_in=600).as_fields()
    call(box, document, exercised, "POST", "/jobs?wait=30", body={"script": "print(2)", **signed}, token=False)
    command = call(box, document, exercised, "POST", "/jobs?wait=30",
                   body={"type": "command", "project": "acme/widget", "command": "true"}).json()
    assert command["status"] == "succeeded", command
    call(box, document, exercised, "DELETE", f"/jobs/{done['id']}")
    call(box, document, exercised, "DELETE", "/jobs/" + "0" * 40)
    call(box, document, exercised, "DELETE", f"/jobs/{done['id']}", token=False)

    gate = tmp_path / "gate"
    running = call(box, document, exercised, "POST", "/jobs", body={"script": gated(gate),
                                                                   "results_location": "conformance/running"}).json()
    while box.request("GET", f"/jobs/{running['id']}", token=False).json()["status"] != "running":
        time.sleep(0.05)
    queued = call(box, document, exercised, "POST", "/jobs", body={"script": "print(3)"}).json()
    call(box, document, exercised, "POST", "/jobs", body={"script": "print(4)"})
    form = urllib.parse.urlencode({"api_token": box.token, "payload": json.dumps({"script_payload": "print(5)"})})
    call(box, document, exercised, "POST", "/", data=form.encode(), headers=FORM, token=False)
    github(box, document, exercised, push(box))
    call(box, document, exercised, "GET", "/results/conformance/running")
    call(box, document, exercised, "DELETE", f"/jobs/{queued['id']}")
    call(box, document, exercised, "DELETE", f"/jobs/{running['id']}")
    box.wait_for(running["id"])

    call(box, document, exercised, "GET", f"/results/{done['results_location']}")
    call(box, document, exercised, "GET", "/results/no/such/key")
    call(box, document, exercised, "GET", "/results/..%2Fetc")
    call(box, document, exercised, "GET", "/results/x", token=False)


def exercise_the_original_form(box, document, exercised, tmp_path):
    token = box.token
    form = urllib.parse.urlencode({"api_token": token, "payload": json.dumps({"script_payload": "print(1)"})})
    call(box, document, exercised, "POST", "/", data=form.encode(), headers=FORM, token=False)
    gate = tmp_path / "gate"
    slow = urllib.parse.urlencode({"api_token": token, "payload": json.dumps({"script_payload": gated(gate),
                                                                              "language": "python"})})
    call(box, document, exercised, "POST", "/", data=slow.encode(), headers=FORM, token=False)
    call(box, document, exercised, "POST", "/", data=form.encode(), headers=FORM, token=False)
    gate.touch()
    call(box, document, exercised, "POST", "/", data=b"payload=%7B%7D", headers=FORM, token=False)
    broken = urllib.parse.urlencode({"api_token": token, "payload": "{"})
    call(box, document, exercised, "POST", "/", data=broken.encode(), headers=FORM, token=False)
    call(box, document, exercised, "POST", "/", data=b"x" * (MAX_BODY + 1), headers=FORM, token=False)


def exercise_github_and_drain(box, document, exercised):
    delivery = str(uuid.uuid4())
    github(box, document, exercised, {"zen": "Keep it logically awesome.", "hook_id": 1}, event="ping")
    github(box, document, exercised, push(box), delivery=delivery)
    github(box, document, exercised, push(box), delivery=delivery)
    github(box, document, exercised, push(box), event="issues")
    github(box, document, exercised, push(box), signature="sha256=00")
    github(box, document, exercised, push(box), delivery="not a guid")
    github(box, document, exercised, {"zen": "x" * MAX_WEBHOOK_BODY}, event="ping")

    call(box, document, exercised, "POST", "/drain", token=False)
    call(box, document, exercised, "POST", "/drain?wait=forever")
    call(box, document, exercised, "POST", "/drain?wait=30")
    call(box, document, exercised, "POST", "/jobs", body={"script": "print(1)"})
    form = urllib.parse.urlencode({"api_token": box.token, "payload": json.dumps({"script_payload": "print(1)"})})
    call(box, document, exercised, "POST", "/", data=form.encode(), headers=FORM, token=False)
    github(box, document, exercised, push(box))
    call(box, document, exercised, "DELETE", "/drain", token=False)
    call(box, document, exercised, "DELETE", "/drain")


def exercise_draining_with_a_job_running_answers_202(box, document, exercised, tmp_path):
    gate = tmp_path / "gate"
    job = box.request("POST", "/jobs", body={"script": gated(gate)}).json()
    call(box, document, exercised, "POST", "/drain")
    gate.touch()
    box.wait_for(job["id"])
    box.request("DELETE", "/drain")


def exercise_a_box_without_secrets(plain, document, exercised):
    call(plain, document, exercised, "GET", "/admin", token=False)
    github(plain, document, exercised, push(plain, "a" * 40))


def test_options_answers_carry_no_html(responder):
    box = responder
    for path in ("/jobs", "/health", "/results/a/b"):
        answer = box.request("OPTIONS", path, token=False)
        assert answer.status == 204
        assert answer.headers.get("Content-Type", "application/json").startswith("application/json")


def test_every_route_answers_as_documented(make_responder, tmp_path):
    for name in ("box", "jobs", "form", "drain"):
        (tmp_path / name).mkdir()
    box = start_box(make_responder, tmp_path / "box")
    document = box.request("GET", "/openapi.json", token=False).json()
    exercised: set[tuple[str, str, str]] = set()
    check_index_against_request_schemas(box, document)
    exercise_status_routes_and_pages(box, document, exercised)
    exercise_job_routes(box, document, exercised, tmp_path / "jobs")
    exercise_the_original_form(box, document, exercised, tmp_path / "form")
    exercise_github_and_drain(box, document, exercised)
    exercise_draining_with_a_job_running_answers_202(box, document, exercised, tmp_path / "drain")
    exercise_a_box_without_secrets(make_responder(), document, exercised)
    documented = {(method.upper(), path, status) for path, operations in document["paths"].items()
                  for method, operation in operations.items() for status in operation["responses"]}
    missing = documented - exercised - set(NOT_PROVOKED)
    assert not missing, sorted(missing)
