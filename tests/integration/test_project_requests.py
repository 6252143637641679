"""Project requests: the project's own web app, booted from its Procfile, sent one request, then stopped."""

import json
import os
import socket
import time
from pathlib import Path

import pytest

from git_projects import GitProject

# A real web app: it reports what it received, and leaves a grandchild running to prove the group is stopped.
APP = """\
import http.server, json, os, subprocess, sys

helper = subprocess.Popen(["sleep", "300"])
print(f"app pid {os.getpid()} helper pid {helper.pid} port {os.environ['PORT']}", flush=True)


class App(http.server.BaseHTTPRequestHandler):
    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        received = {"method": self.command, "path": self.path, "body": self.rfile.read(length).decode(),
                    "content_type": self.headers.get("Content-Type"), "greeting": os.environ.get("GREETING")}
        data = json.dumps(received).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Served-By", "widget")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = answer

    def log_message(self, format, *args):
        print("request", self.command, self.path, file=sys.stderr, flush=True)


http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), App).serve_forever()
"""


@pytest.fixture
def project(tmp_path: Path) -> GitProject:
    return GitProject(tmp_path)


def request_job(responder, **fields):
    answer = responder.request("POST", "/jobs?wait=60", body={"type": "project_request", "project": "acme/widget",
                                                               **fields})
    assert answer.status in (200, 202), answer.body
    job = answer.json()
    return job if answer.status == 200 else responder.wait_for(job["id"], timeout=60)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def eventually_dead(pid: int) -> bool:
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def port_is_closed(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_the_app_gets_the_request_and_its_answer_is_the_result(make_responder, project):
    project.commit({"app.py": APP, "Procfile": "worker: sleep 1000\nweb: python3 app.py\n"})
    responder = make_responder(repo_base_url=project.base_url)
    job = request_job(responder, project_request="/hello?name=x", request_body="a=1&b=2",
                      results_location="requests/hello")
    assert job["status"] == "succeeded", (job["error"], job["stdout"], job["stderr"])
    response = job["details"]["response"]
    assert response["status"] == 201 and response["headers"]["X-Served-By"] == "widget"
    assert json.loads(response["body"]) == {"method": "POST", "path": "/hello?name=x", "body": "a=1&b=2",
                                            "content_type": "application/x-www-form-urlencoded", "greeting": None}
    stored = responder.request("GET", "/results/requests/hello").json()
    assert stored["response"] == response and stored["results"] == response["body"]
    words = job["stdout"].split()
    app_pid, helper_pid, port = int(words[2]), int(words[5]), int(words[7])
    assert port == job["details"]["request"]["port"]
    assert "request POST /hello?name=x" in job["stderr"]
    assert eventually_dead(app_pid) and eventually_dead(helper_pid)
    assert port_is_closed(port)


def test_method_body_content_type_and_the_web_entry_of_deferred_server(make_responder, project):
    deferred = 'web = "python3 app.py"\n[env]\nGREETING = "hi"\n'
    project.commit({"app.py": APP, "Procfile": "web: exit 9\n", ".deferred_server": deferred})
    responder = make_responder(repo_base_url=project.base_url)
    job = request_job(responder, project_request="/items/1", request_method="PUT", request_body='{"a": 1}',
                      request_content_type="application/json")
    assert job["status"] == "succeeded", (job["error"], job["output"])
    received = json.loads(job["details"]["response"]["body"])
    assert received == {"method": "PUT", "path": "/items/1", "body": '{"a": 1}', "content_type": "application/json",
                        "greeting": "hi"}
    plain = request_job(responder, project_request="/", request_method="GET")
    assert json.loads(plain["details"]["response"]["body"])["method"] == "GET"


def test_a_crashing_app_fails_the_job_with_its_own_output(make_responder, project):
    project.commit({"Procfile": "web: echo missing dependency >&2; exit 3\n"})
    responder = make_responder(repo_base_url=project.base_url)
    job = request_job(responder, project_request="/")
    assert job["status"] == "failed" and job["exit_status"] == 3
    assert "exited (status 3) before accepting connections" in job["error"]
    assert job["output"] == "missing dependency\n"
    assert "response" not in job["details"]


def test_an_app_that_never_listens_fails_after_boot_timeout_and_is_stopped(make_responder, project, tmp_path):
    pid_file = tmp_path / "slow.pid"
    project.commit({"Procfile": f"web: echo still booting; echo $$ > {pid_file}; exec sleep 300\n"})
    responder = make_responder(repo_base_url=project.base_url, boot_timeout=2)
    job = request_job(responder, project_request="/")
    assert job["status"] == "failed"
    assert "did not accept connections" in job["error"] and "boot_timeout (2 s)" in job["error"]
    assert job["output"] == "still booting\n"
    assert eventually_dead(int(pid_file.read_text()))


def test_a_project_without_a_web_process_says_so(make_responder, project):
    project.commit({"README": "no web here"})
    responder = make_responder(repo_base_url=project.base_url)
    job = request_job(responder, project_request="/")
    assert job["status"] == "failed" and "Procfile" in job["error"]


def test_hostile_project_requests_are_refused(make_responder, project, tmp_path):
    marker = tmp_path / "marker"
    project.commit({"Procfile": f"web: touch {marker}\n"})
    responder = make_responder(repo_base_url=project.base_url)
    for fields, field in [({"project": "../x"}, "project"), ({"commit": f";touch {marker}"}, "commit"),
                          ({"project_request": f"/x; touch {marker}"}, "project_request"),
                          ({"request_method": "GET /x HTTP/1.1\r\n"}, "request_method")]:
        body = {"type": "project_request", "project": "acme/widget", "project_request": "/", **fields}
        answer = responder.request("POST", "/jobs", body=body)
        assert (answer.status, answer.json().get("field")) == (400, field)
    assert responder.request("GET", "/jobs").json()["jobs"] == []
    assert not marker.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_the_app_runs_as_the_job_user(make_responder, project):
    import pwd
    import shutil
    import tempfile

    project.commit({"app.py": APP, "Procfile": "web: id -u; exec python3 app.py\n"})
    # pytest's own temporary directories are private to root; a job user must be able to reach its work dir.
    base = Path(tempfile.mkdtemp(prefix="sr-request-user-"))
    base.chmod(0o711)
    try:
        responder = make_responder(base=base, job_user="nobody", repo_base_url=project.base_url)
        job = request_job(responder, project_request="/as-nobody")
        assert job["status"] == "succeeded", (job["error"], job["output"])
        assert job["stdout"].splitlines()[0] == str(pwd.getpwnam("nobody").pw_uid)
        assert json.loads(job["details"]["response"]["body"])["path"] == "/as-nobody"
        responder.stop()
    finally:
        shutil.rmtree(base)


HANGING_APP = """\
import http.server, os, time


class Hang(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        open({arrived!r}, "w").close()
        time.sleep(300)


http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Hang).serve_forever()
"""


def test_cancelling_stops_the_app_and_the_request_in_flight(make_responder, project, tmp_path):
    arrived = tmp_path / "request-arrived"
    project.commit({"app.py": HANGING_APP.format(arrived=str(arrived)), "Procfile": "web: python3 app.py\n"})
    responder = make_responder(repo_base_url=project.base_url)
    job = responder.request("POST", "/jobs", body={"type": "project_request", "project": "acme/widget",
                                                    "project_request": "/slow", "timeout": 600}).json()
    deadline = time.monotonic() + 30
    while not arrived.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert arrived.exists(), "the request never reached the app"
    port = responder.request("GET", f"/jobs/{job['id']}", token=False).json()["details"]["request"]["port"]
    assert responder.request("DELETE", f"/jobs/{job['id']}").status in (200, 202)
    # Far sooner than the request's own 600 s timeout.
    assert responder.wait_for(job["id"], timeout=30)["status"] == "cancelled"
    assert port_is_closed(port)
