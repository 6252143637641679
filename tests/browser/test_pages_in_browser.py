"""The pages in a real headless Chromium against a real responder process."""

from __future__ import annotations

import html
import json
import re
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

from server_responder import __version__
from server_responder.signing import sign_script

CODE_SECRET = "browser-code-secret-5f1c"
ADMIN_PASS = "browser-admin-pass-93a7"
JOB_TIMEOUT_MS = 30_000


@pytest.fixture
def pages_responder(make_responder):
    return make_responder(code_secret=CODE_SECRET, admin_pass=ADMIN_PASS)


def console_errors(page) -> list[str]:
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


def give_signed_job(example, signed) -> None:
    """Put another signed job in an example, as a page rendered with it would hold it."""
    example.evaluate("(element, job) => { element.dataset.job = JSON.stringify(job); }", signed.as_fields())


def test_index_says_what_the_responder_is_with_its_health_idle_state_and_links(pages_responder, page):
    errors = console_errors(page)
    response = page.goto(pages_responder.url + "/")
    assert response.status == 200
    assert "script-src 'self'" in response.headers["content-security-policy"]
    expect(page.locator("h1")).to_have_text(f"Server Responder {__version__}")
    expect(page.locator("main")).to_contain_text("runs jobs")
    health = page.locator("section", has=page.get_by_role("heading", name="Health"))
    expect(health).to_contain_text("Accepting jobs")
    expect(health.locator("dd").last).to_have_text("yes")
    idle = page.locator("section", has=page.get_by_role("heading", name="Idle state"))
    expect(idle).to_contain_text("Last activity")
    expect(idle).to_contain_text("Running jobs")
    links = page.locator("main a").evaluate_all("links => links.map(link => link.getAttribute('href'))")
    assert {"/example", "/admin", "/openapi.json"} <= set(links)
    # The stylesheet is served by the responder and allowed by the page's policy.
    assert page.locator("header.top").evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(31, 78, 121)"
    assert errors == []


def test_example_page_runs_the_default_example_and_shows_nine(pages_responder, page):
    errors = console_errors(page)
    page.goto(pages_responder.url + "/example")
    example = page.locator(".sr-example").filter(has_text="print(5 + 4)")
    example.get_by_role("button", name="Run").click()
    expect(example.locator(".sr-status")).to_have_text("Finished: succeeded", timeout=JOB_TIMEOUT_MS)
    assert example.locator(".sr-stdout").text_content() == "9\n"
    assert example.locator(".sr-exit-status").text_content() == "0"
    assert example.locator(".sr-stderr").text_content() == ""
    expect(example.locator(".sr-duration")).to_have_text(re.compile(r"^\d+\.\d\d s$"))
    assert errors == []


def test_example_shows_the_running_state_until_the_job_finishes(pages_responder, page, tmp_path):
    release = tmp_path / "release"
    script = f"import os, time\nwhile not os.path.exists({str(release)!r}):\n    time.sleep(0.05)\nprint('released')"
    page.goto(pages_responder.url + "/example")
    example = page.locator(".sr-example").first
    give_signed_job(example, sign_script(CODE_SECRET, script, "python", expires_in=600))
    button = example.get_by_role("button", name="Run")
    button.click()
    expect(example.locator(".sr-status")).to_have_text("Running…")
    expect(example.locator(".sr-result")).to_have_attribute("data-state", "running")
    expect(button).to_be_disabled()
    release.touch()
    expect(example.locator(".sr-status")).to_have_text("Finished: succeeded", timeout=JOB_TIMEOUT_MS)
    assert example.locator(".sr-stdout").text_content() == "released\n"
    expect(button).to_be_enabled()


def test_example_shows_output_as_it_arrives_while_the_job_runs(pages_responder, page, tmp_path):
    gate = tmp_path / "gate"
    script = ("import os, sys, time\nprint('first line', flush=True)\nprint('warned', file=sys.stderr, flush=True)\n"
              f"while not os.path.exists({str(gate)!r}):\n    time.sleep(0.05)\nprint('second line')")
    errors = console_errors(page)
    page.goto(pages_responder.url + "/example")
    example = page.locator(".sr-example").first
    give_signed_job(example, sign_script(CODE_SECRET, script, "python", expires_in=600))
    example.get_by_role("button", name="Run").click()
    # Shown while the job waits for its gate, which only this test opens, and only once the line is there.
    expect(example.locator(".sr-stdout")).to_have_text("first line\n")
    expect(example.locator(".sr-stderr")).to_have_text("warned\n")
    expect(example.locator(".sr-status")).to_have_text("Running…")
    gate.touch()
    expect(example.locator(".sr-status")).to_have_text("Finished: succeeded", timeout=JOB_TIMEOUT_MS)
    assert example.locator(".sr-stdout").text_content() == "first line\nsecond line\n"
    assert errors == []


def test_example_shows_a_failing_job_with_its_streams_and_exit_status(pages_responder, page):
    page.goto(pages_responder.url + "/example")
    example = page.locator(".sr-example").filter(has_text="exit 3")
    example.get_by_role("button", name="Run").click()
    expect(example.locator(".sr-status")).to_have_text("Finished: failed", timeout=JOB_TIMEOUT_MS)
    expect(example.locator(".sr-result")).to_have_attribute("data-state", "failed")
    assert example.locator(".sr-exit-status").text_content() == "3"
    assert example.locator(".sr-stdout").text_content() == "counting to three\n1\n2\n3\n"
    assert example.locator(".sr-stderr").text_content() == "and now a failure\n"


def test_an_expired_signature_shows_a_clear_error_and_runs_nothing(pages_responder, page):
    page.goto(pages_responder.url + "/example")
    example = page.locator(".sr-example").first
    give_signed_job(example, sign_script(CODE_SECRET, "print('too late')", "python", expires_in=-60))
    example.get_by_role("button", name="Run").click()
    status = example.locator(".sr-status")
    expect(status).to_contain_text("signature has expired")
    expect(status).to_contain_text("401")
    expect(status).to_contain_text("Reload the page")
    expect(example.locator(".sr-result")).to_have_attribute("data-state", "error")
    assert example.locator(".sr-stdout").text_content() == ""
    assert pages_responder.request("GET", "/jobs").json()["jobs"] == []


def test_output_that_looks_like_markup_is_shown_as_text(pages_responder, page):
    markup = ("<script>document.title = 'injected'</script>"
              "<img id=injected-img src=/nowhere onerror=\"document.title = 'injected'\"><b id=injected-b>bold</b>")
    script = f"import sys\nprint({markup!r})\nprint({markup!r}, file=sys.stderr)"
    page.goto(pages_responder.url + "/example")
    title = page.title()
    example = page.locator(".sr-example").first
    give_signed_job(example, sign_script(CODE_SECRET, script, "python", expires_in=600))
    example.get_by_role("button", name="Run").click()
    expect(example.locator(".sr-status")).to_have_text("Finished: succeeded", timeout=JOB_TIMEOUT_MS)
    assert example.locator(".sr-stdout").text_content() == markup + "\n"
    assert example.locator(".sr-stderr").text_content() == markup + "\n"
    assert example.locator(".sr-result script, .sr-result img, .sr-result b").count() == 0
    assert page.locator("#injected-img, #injected-b").count() == 0
    assert page.title() == title


def test_example_page_without_a_code_secret_says_how_to_enable_it(make_responder, page):
    responder = make_responder()
    page.goto(responder.url + "/example")
    expect(page.locator("main")).to_contain_text("SERVER_RESPONDER_CODE_SECRET")
    assert page.locator(".sr-run").count() == 0


class OtherSite:
    """A page on another origin embedding a signed script as the README shows."""

    def __init__(self) -> None:
        self.page_html = b""
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.end_headers()
                self.wfile.write(owner.page_html)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def embed(self, responder_url: str, fields: dict) -> None:
        self.page_html = (
            "<!doctype html><title>Another site</title>\n"
            f'<div class="sr-example" data-responder="{html.escape(responder_url)}"\n'
            f'     data-job="{html.escape(json.dumps(fields))}"></div>\n'
            f'<script src="{html.escape(responder_url)}/static/example.js" defer></script>\n'
        ).encode()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def other_sites() -> Iterator[tuple[OtherSite, OtherSite]]:
    sites = (OtherSite(), OtherSite())
    yield sites
    for site in sites:
        site.close()


def test_another_site_embeds_a_signed_script_only_from_a_configured_origin(make_responder, page, other_sites):
    allowed, unknown = other_sites
    responder = make_responder(code_secret=CODE_SECRET, cors_origins=[allowed.origin])
    fields = sign_script(CODE_SECRET, "print(5 + 4)", "python", expires_in=600).as_fields()
    for site in other_sites:
        site.embed(responder.url, fields)

    page.goto(allowed.origin + "/")
    example = page.locator(".sr-example")
    example.get_by_role("button", name="Run").click()
    expect(example.locator(".sr-status")).to_have_text("Finished: succeeded", timeout=JOB_TIMEOUT_MS)
    assert example.locator(".sr-stdout").text_content() == "9\n"

    page.goto(unknown.origin + "/")
    example = page.locator(".sr-example")
    example.get_by_role("button", name="Run").click()
    expect(example.locator(".sr-status")).to_contain_text("Could not reach the responder")
    assert len(responder.request("GET", "/jobs").json()["jobs"]) == 1


def refused_admin_visit(page, url: str):
    """Visit /admin and return the answer; a browser with no credentials to offer ends the visit itself."""
    with page.expect_response(url) as answer:
        try:
            page.goto(url)
        except PlaywrightError as error:
            assert "ERR_INVALID_AUTH_CREDENTIALS" in str(error)
    return answer.value


def test_admin_refuses_without_the_right_credentials(pages_responder, page, open_page):
    url = pages_responder.url + "/admin"
    for visitor in (page, open_page(http_credentials={"username": "admin", "password": "not-" + ADMIN_PASS}),
                    open_page(http_credentials={"username": "root", "password": ADMIN_PASS})):
        answer = refused_admin_visit(visitor, url)
        assert answer.status == 401
        assert answer.headers["www-authenticate"].startswith("Basic ")
        expect(visitor.locator("html")).not_to_contain_text("Recent jobs")
        expect(visitor.locator("html")).not_to_contain_text(pages_responder.token)


def test_admin_shows_jobs_and_the_last_request_but_never_a_secret(pages_responder, open_page):
    token = pages_responder.token
    first = pages_responder.submit("print('from the API')")
    form = urllib.parse.urlencode({
        "api_token": token,
        "payload": json.dumps({"script_payload": f"print(1)  # {token}", "language": "python"}),
    }).encode()
    answer = pages_responder.request(
        "POST", "/?" + urllib.parse.urlencode({"api_token": token}), data=form,
        headers={"Content-Type": "application/x-www-form-urlencoded", "X-Hub-Signature-256": "sha256=" + "ab" * 32})
    assert answer.status == 200, answer.body
    second = answer.json()

    admin = open_page(http_credentials={"username": "admin", "password": ADMIN_PASS})
    errors = console_errors(admin)
    response = admin.goto(pages_responder.url + "/admin")
    assert response.status == 200
    assert response.headers["cache-control"] == "no-store"
    content = admin.content()
    for secret in (token, CODE_SECRET, ADMIN_PASS, "ab" * 32):
        assert secret not in content

    jobs = admin.locator("table.jobs tbody tr")
    expect(jobs).to_have_count(2)
    expect(jobs.first).to_contain_text(second["job_id"][:12])
    expect(jobs.first).to_contain_text("succeeded")
    expect(jobs.nth(1)).to_contain_text(first["id"][:12])

    request = admin.locator("section", has=admin.get_by_role("heading", name="Last request"))
    expect(request).to_contain_text("POST /")
    for name in ("Authorization", "X-Hub-Signature-256", "api_token"):
        expect(request.locator("tr", has=admin.locator(f"th:text-is('{name}')")).first.locator("td")).to_have_text(
            "<redacted>")
    expect(request).to_contain_text("print(1)  # <redacted>")

    settings = admin.locator("section", has=admin.get_by_role("heading", name="Settings"))
    expect(settings.locator("tr", has=admin.locator("th:text-is('api_key')")).locator("td")).to_have_text("<set>")
    expect(admin.locator("section", has=admin.get_by_role("heading", name="Idle state"))).to_contain_text(
        "Last activity")
    assert errors == []

    jobs.first.get_by_role("link").click()
    admin.wait_for_url(f"**/jobs/{second['job_id']}")
    assert json.loads(admin.locator("body").inner_text())["stdout"] == "1\n"
