"""The pages over plain HTTP: headers, static files, basic auth, and example signatures that really run."""

import base64
import json
import time
from html.parser import HTMLParser

import pytest

CODE_SECRET = "pages-code-secret"
ADMIN_PASS = "pages-admin-pass"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


class SignedJobs(HTMLParser):
    """Collects the signed jobs the example page embeds in `data-job` attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.jobs: list[dict] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if "data-job" in attributes:
            self.jobs.append(json.loads(attributes["data-job"]))


@pytest.fixture
def pages_responder(make_responder):
    return make_responder(code_secret=CODE_SECRET, admin_pass=ADMIN_PASS)


def test_pages_are_html_with_a_content_security_policy(pages_responder):
    for path, headers in (("/", {}), ("/example", {}), ("/admin", basic("admin", ADMIN_PASS))):
        answer = pages_responder.request("GET", path, headers=headers, token=False)
        assert answer.status == 200, path
        assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
        policy = answer.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy
        assert answer.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("name, content_type", [
    ("style.css", "text/css; charset=utf-8"),
    ("example.js", "text/javascript; charset=utf-8"),
    ("favicon.svg", "image/svg+xml"),
])
def test_static_files_are_served_with_their_types(responder, name, content_type):
    answer = responder.request("GET", f"/static/{name}", token=False)
    assert answer.status == 200
    assert answer.headers["Content-Type"] == content_type
    assert answer.body


@pytest.mark.parametrize("path", ["/static/nothing.css", "/static/..%2f__init__.py", "/static/%2e%2e",
                                  "/static/", "/static/a/b.css"])
def test_only_packaged_static_files_are_served(responder, path):
    answer = responder.request("GET", path, token=False)
    assert answer.status == 404
    assert b"import" not in answer.body


def test_admin_is_not_there_without_an_admin_password(responder):
    answer = responder.request("GET", "/admin", headers=basic("admin", ""), token=False)
    assert answer.status == 404
    assert answer.json()["error"] == "not_found"


def test_pages_link_the_admin_page_only_where_it_is_enabled_and_say_how_to_enable_it(responder, pages_responder):
    for path in ("/", "/example"):
        page = responder.request("GET", path, token=False).body.decode()
        assert 'href="/admin"' not in page, path
    index = responder.request("GET", "/", token=False).body.decode()
    assert "not enabled here" in index and "SERVER_RESPONDER_ADMIN_PASS" in index and "admin_pass_file" in index
    for path in ("/", "/example"):
        page = pages_responder.request("GET", path, token=False).body.decode()
        assert page.count('href="/admin"') == (2 if path == "/" else 1), path
    assert "not enabled here" not in pages_responder.request("GET", "/", token=False).body.decode()


@pytest.mark.parametrize("headers", [{}, basic("admin", "wrong"), basic("someone", ADMIN_PASS),
                                     {"Authorization": "Basic %%%"}])
def test_admin_answers_401_with_a_basic_challenge(pages_responder, headers):
    answer = pages_responder.request("GET", "/admin", headers=headers, token=False)
    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"].startswith('Basic realm="server-responder admin"')
    # The API token is not a way in either.
    assert pages_responder.request("GET", "/admin").status == 401


def test_admin_shows_the_last_request_without_its_credentials(pages_responder):
    token = pages_responder.token
    pages_responder.request("POST", "/jobs?wait=30", body={"script": f"print(len('{token}'))",
                                                           "env": {"SECRET_THING": "value-of-secret"}})
    page = pages_responder.request("GET", "/admin", headers=basic("admin", ADMIN_PASS), token=False)
    assert page.status == 200
    assert page.headers["Cache-Control"] == "no-store"
    text = page.body.decode()
    assert "POST /jobs" in text and "SECRET_THING" in text
    for secret in (token, CODE_SECRET, ADMIN_PASS, "value-of-secret"):
        assert secret not in text


def test_example_page_signs_scripts_that_run_without_the_token(pages_responder):
    page = pages_responder.request("GET", "/example", token=False)
    parser = SignedJobs()
    parser.feed(page.body.decode())
    default = parser.jobs[0]
    assert default["script"] == "print(5 + 4)" and default["language"] == "python"
    assert time.time() < default["expires"] <= time.time() + 15 * 60 + 5
    answer = pages_responder.request("POST", "/jobs?wait=30", body=default, token=False)
    assert answer.status == 200, answer.body
    assert answer.json()["stdout"] == "9\n"


def test_example_page_without_a_code_secret_says_how_to_enable_it(responder):
    page = responder.request("GET", "/example", token=False)
    assert page.status == 200
    assert b"SERVER_RESPONDER_CODE_SECRET" in page.body
    assert b"data-job" not in page.body
