"""The HTML pages: what this responder is, signed examples to run, and an admin view behind basic auth."""

from __future__ import annotations

import base64
import hmac
import json
import logging
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from server_responder import __version__
from server_responder.jobs.record import FINISHED, SUCCEEDED, Job
from server_responder.jobs.requests import language_problem
from server_responder.responder import Responder
from server_responder.signing import sign_script
from server_responder.web.api import StatusApi
from server_responder.web.http import HttpError, Incoming, Response, Route
from server_responder.web.last_request import RecordedRequest, RequestRecorder
from server_responder.web.templates import Markup, PageTemplate, join, static_files, template

log = logging.getLogger("server_responder.web")

ADMIN_USER = "admin"
# Long enough to read a page and press Run, short enough that a copied signature soon stops working.
EXAMPLE_SIGNATURE_SECONDS = 15 * 60
RECENT_JOBS_SHOWN = 25

PAGE_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".svg": "image/svg+xml"}

IDLE_LABELS = {
    "last_time": "Last activity", "last_started": "Last job started", "last_finished": "Last job finished",
    "booted_at": "Started", "running_jobs": "Running jobs", "queued_jobs": "Queued jobs",
    "idle_seconds": "Idle for (seconds)", "draining": "Draining",
}


@dataclass(frozen=True)
class Example:
    title: str
    language: str
    script: str


EXAMPLES = (
    Example("Add two numbers", "python", "print(5 + 4)"),
    Example("Write to both streams and fail", "bash",
            'echo "counting to three"\nfor n in 1 2 3; do echo "$n"; done\necho "and now a failure" >&2\nexit 3'),
    Example("The original example", "ruby", "puts (5+4)"),
)

_ADMIN_ITEM = Markup("<li><a href=\"/admin\">/admin</a> — recent jobs, the last request and the settings</li>")
_ADMIN_OFF_ITEM = Markup(
    "<li><code>/admin</code> — recent jobs, the last request and the settings; not enabled here. To turn it on, "
    "set an admin password, <code>SERVER_RESPONDER_ADMIN_PASS</code> in the service's environment (or "
    "<code>admin_pass</code>, or <code>admin_pass_file</code> naming a file that holds it, in the settings "
    "file), and restart the responder; the page then asks for the user <code>admin</code> and that "
    "password.</li>")
_FACTS = PageTemplate("<dl class=\"facts\">\n$items</dl>", "facts")
_TABLE = PageTemplate("<table class=\"pairs\">\n$rows</table>", "table")
_SCRIPT = PageTemplate("<script src=\"$src\" defer></script>", "script")
_ROW = PageTemplate("<tr><th scope=\"row\">$name</th><td>$value</td></tr>\n", "row")
_FACT = PageTemplate("<dt>$name</dt><dd>$value</dd>\n", "fact")
_CODE = PageTemplate("<pre class=\"value\">$text</pre>", "code")
_JOB_ROW = PageTemplate(
    "<tr><td><a href=\"$href\"><code>$short_id</code></a></td><td>$type</td>"
    "<td><span class=\"badge $status_class\">$status</span></td><td>$exit_status</td><td>$duration</td>"
    "<td>$created_at</td></tr>\n", "job row")
_EXAMPLE = PageTemplate(
    "<section class=\"card sr-example\" data-job=\"$job\">\n"
    "<h2>$title <span class=\"language\">$language</span></h2>\n"
    "<pre class=\"script\"><code>$script</code></pre>\n"
    "<button type=\"button\" class=\"sr-run\">Run</button>\n"
    "</section>\n", "example")


class PagesApi:
    """Renders the pages from `templates/` and serves `static/`; every page carries a strict CSP."""

    def __init__(self, responder: Responder, status: StatusApi, recorder: RequestRecorder | None = None) -> None:
        self.responder = responder
        self.recorder = recorder
        # The pages show what the JSON status routes answer, so both always agree.
        self._status = status
        self._static = static_files()

    def routes(self) -> list[Route]:
        return [
            Route("GET", "/", self.index, "What this responder is, its health and idle state"),
            Route("GET", "/example", self.example, "Signed example scripts to run from the page"),
            Route("GET", "/admin", self.admin, "Recent jobs, the last request and the settings (basic auth)"),
            Route("GET", "/static/{name}", self.static, "The pages' stylesheet and script"),
        ]

    def index(self, incoming: Incoming) -> Response:
        health = self._status.health(incoming)
        body = template("index.html").render(
            version=__version__,
            health=_facts({"Status": health["status"], "Version": health["version"],
                           "Accepting jobs": _yes_no(health["accepting"])}),
            idle=self._idle_facts(incoming),
            admin_item=_ADMIN_ITEM if self._admin_enabled else _ADMIN_OFF_ITEM,
        )
        return _page("Status", body, admin_link=self._admin_enabled)

    def example(self, incoming: Incoming) -> Response:
        settings = self.responder.settings
        if settings.code_secret is None:
            return _page("Examples", template("example_disabled.html").render(), admin_link=self._admin_enabled)
        # Only examples this box can run: a language configured whose interpreter is installed.
        examples = [example for example in EXAMPLES if language_problem(example.language, settings) is None]
        if not examples:
            return _page("Examples", Markup("<h1>Examples</h1>\n<p>No example's language is configured.</p>"),
                         admin_link=self._admin_enabled)
        secret = settings.code_secret.reveal()
        sections = []
        for example in examples:
            signed = sign_script(secret, example.script, example.language, None,
                                 expires_in=EXAMPLE_SIGNATURE_SECONDS)
            sections.append(_EXAMPLE.render(job=json.dumps(signed.as_fields()), title=example.title,
                                            language=example.language, script=example.script))
        body = template("example.html").render(examples=join(sections), expires_at=_iso(signed.expires),
                                               minutes=EXAMPLE_SIGNATURE_SECONDS // 60)
        return _page("Examples", body, script="/static/example.js", admin_link=self._admin_enabled)

    def admin(self, incoming: Incoming) -> Response:
        admin_pass = self.responder.settings.admin_pass
        if admin_pass is None:
            raise HttpError(404, "not_found", f"no route for {incoming.path}")
        presented = incoming.headers.get("Authorization")
        if not basic_credentials_match(presented, ADMIN_USER, admin_pass.reveal()):
            if presented:
                log.warning("admin credentials refused", extra={"event": "admin.refused", "remote": incoming.remote,
                                                                 "request_id": incoming.request_id})
            raise HttpError(401, "unauthorized", "the admin page needs the admin user and password",
                            headers={"WWW-Authenticate": 'Basic realm="server-responder admin", charset="UTF-8"'})
        last = self.recorder.last if self.recorder is not None else None
        body = template("admin.html").render(
            jobs=_jobs_table(self.responder.jobs.recent(RECENT_JOBS_SHOWN)),
            last_request=_request_view(last),
            idle=self._idle_facts(incoming),
            settings=_settings_table(self.responder.settings.redacted()),
        )
        return _page("Admin", body, extra_headers={"Cache-Control": "no-store"}, admin_link=True)

    @property
    def _admin_enabled(self) -> bool:
        return self.responder.settings.admin_pass is not None

    def static(self, incoming: Incoming, name: str) -> Response:
        content = self._static.get(name)
        suffix = "." + name.rpartition(".")[2]
        if content is None or suffix not in STATIC_TYPES:
            raise HttpError(404, "not_found", f"no static file {name}")
        return Response(content, content_type=STATIC_TYPES[suffix],
                        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})

    def _idle_facts(self, incoming: Incoming) -> Markup:
        # The same figures /last_job answers, so whatever it learns to report shows here too.
        state = self._status.last_job(incoming)
        return _facts({IDLE_LABELS.get(key, key.replace("_", " ").capitalize()): _display(value)
                       for key, value in state.items()})


def basic_credentials_match(header: str | None, user: str, password: str) -> bool:
    """Whether an `Authorization: Basic` header names `user` and `password` (both compared in constant time)."""
    scheme, _, encoded = (header or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return False
    given_user, colon, given_password = decoded.partition(":")
    if not colon:
        return False
    user_matches = hmac.compare_digest(given_user.encode(), user.encode())
    password_matches = hmac.compare_digest(given_password.encode(), password.encode())
    return user_matches and password_matches


def _page(title: str, content: Markup, script: str | None = None,
          extra_headers: Mapping[str, str] | None = None, *, admin_link: bool) -> Response:
    """A page in the layout; the Admin link only where the admin page is enabled, since it is 404 otherwise."""
    head = _SCRIPT.render(src=script) if script else ""
    page = template("layout.html").render(title=title, head=head, content=content, version=__version__,
                                          admin_link=Markup("<a href=\"/admin\">Admin</a>\n") if admin_link else "")
    return Response(page, content_type="text/html; charset=utf-8", headers={**PAGE_HEADERS, **(extra_headers or {})})


def _facts(facts: Mapping[str, object]) -> Markup:
    return _FACTS.render(items=join(_FACT.render(name=name, value=value) for name, value in facts.items()))


def _jobs_table(jobs: list[Job]) -> Markup:
    if not jobs:
        return Markup("<p class=\"empty\">No jobs yet.</p>")
    rows = (_JOB_ROW.render(href="/jobs/" + urllib.parse.quote(job.id, safe=""), short_id=job.id[:12],
                            type=job.type, status=job.status, status_class=_status_class(job.status),
                            exit_status=_display(job.exit_status), duration=_duration(job.duration_s),
                            created_at=job.created_at) for job in jobs)
    return template("jobs_table.html").render(rows=join(rows))


def _request_view(recorded: RecordedRequest | None) -> Markup:
    if recorded is None:
        return Markup("<p class=\"empty\">No job has been submitted since the responder started.</p>")
    return template("last_request.html").render(
        summary=_facts({"Received": recorded.received_at, "Request": f"{recorded.method} {recorded.path}",
                        "From": recorded.remote, "Request id": recorded.request_id, "Body": recorded.body_note}),
        headers=_table(recorded.headers),
        query=_table(recorded.query),
        fields=_table(recorded.fields),
    )


def _settings_table(settings: Mapping[str, Any]) -> Markup:
    return _table((name, value if isinstance(value, str) else json.dumps(value))
                  for name, value in sorted(settings.items()))


def _table(pairs) -> Markup:
    rows = [_ROW.render(name=name, value=_CODE.render(text=value) if "\n" in value else value)
            for name, value in pairs]
    if not rows:
        return Markup("<p class=\"empty\">None.</p>")
    return _TABLE.render(rows=join(rows))


def _status_class(status: str) -> str:
    if status == SUCCEEDED:
        return "ok"
    return "bad" if status in FINISHED else "busy"


def _display(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return _yes_no(value)
    return str(value)


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


def _duration(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds:.2f} s"


def _iso(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
