"""Request fields of the project job types (command, project_request, github_push), every one checked."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from server_responder.http_client import InvalidDestination
from server_responder.jobs import callbacks
from server_responder.jobs.requests import check_text, env_field, location_field, timeout_field
from server_responder.jobs.types import JobRequest, RequestError, RequestField, refuse_unknown
from server_responder.projects import git
from server_responder.projects import github
from server_responder.settings import Settings

MAX_COMMAND_LENGTH = 16 * 1024
MAX_REQUEST_BODY = 1024 * 1024
REQUEST_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
_REQUEST_PATH = re.compile(r"/[\x21-\x7e]{0,2047}")
_CONTENT_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+(; ?[\x20-\x7e]{1,200})?")

_STRING = {"type": "string"}
_PROJECT = RequestField("project", {"type": "string", "pattern": "^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+$"},
                        "owner/name of the repository at repo_base_url (required)", required=True)
_LOCATION = RequestField("results_location", {"type": "string", "pattern": "^[A-Za-z0-9._/-]{1,512}$"},
                         "store key for the result document (default results/<job id>)")
_TIMEOUT = RequestField("timeout", {"type": "number", "exclusiveMinimum": 0},
                        "seconds before the command is killed (default default_timeout, at most max_timeout)")
_ENV = RequestField("env", {"type": "object", "additionalProperties": {"type": "string"}},
                    "extra environment variables for the job")
_CALLBACK = RequestField("callback_url", {"type": "string", "format": "uri"},
                         "http(s) URL to POST {job_id, status, exit_status, project_key, commit_key, "
                         "results_location} to when the job ends (default callback_url)")
COMMAND_FIELDS = (
    _PROJECT, _LOCATION, _TIMEOUT, _ENV, _CALLBACK,
    RequestField("command", _STRING, "run through /bin/sh -c in the checkout (default default_command)"),
    RequestField("commit", _STRING,
                 "a sha or ref, a comma-separated list of them (_<list>_ in results_location becomes _<sha>_), "
                 "or history: one commit a day over history_days (default: the default branch)"),
)
PROJECT_REQUEST_FIELDS = (
    _PROJECT, _LOCATION, _TIMEOUT, _ENV, _CALLBACK,
    RequestField("project_request", {"type": "string", "pattern": "^/"},
                 "path of the request sent to the project's own web app (required)", required=True),
    RequestField("request_method", {"enum": list(REQUEST_METHODS), "default": "POST"},
                 "HTTP method of that request (default POST)"),
    RequestField("request_body", _STRING, "body of that request (default empty)"),
    RequestField("request_content_type", {"type": "string", "default": "application/x-www-form-urlencoded"},
                 "its Content-Type (default application/x-www-form-urlencoded)"),
    RequestField("commit", _STRING, "a sha or ref (default: the default branch)"),
)
GITHUB_PUSH_FIELDS = (
    RequestField("push", {"type": "object"},
                 "GitHub's push event payload (required); the command comes from .deferred_server at `after`",
                 required=True),
    _LOCATION,
    _CALLBACK,
)


def project_field(body: Mapping[str, Any]) -> str:
    try:
        return git.validate_project(body.get("project"))
    except git.InvalidProject as error:
        raise RequestError("project", str(error)) from None


def commits_field(body: Mapping[str, Any], *, single: bool = False) -> list[str]:
    try:
        commits = git.parse_commits(body.get("commit"))
    except git.InvalidRevision as error:
        raise RequestError("commit", str(error)) from None
    if single and (len(commits) > 1 or commits == [git.HISTORY]):
        raise RequestError("commit", "must be one commit sha or ref for this job type")
    return commits


def command_field(body: Mapping[str, Any], settings: Settings) -> str:
    command = body.get("command")
    if command is None:
        return settings.default_command
    if not isinstance(command, str) or not command.strip():
        raise RequestError("command", "must be a non-empty string")
    if len(command) > MAX_COMMAND_LENGTH:
        raise RequestError("command", f"must be at most {MAX_COMMAND_LENGTH} characters")
    check_text("command", command)
    return command


def callback_field(body: Mapping[str, Any], settings: Settings) -> str | None:
    url = body.get("callback_url")
    if url is None:
        return None
    try:
        return callbacks.validate_callback_url(url, settings.refused_networks)
    except InvalidDestination as error:
        raise RequestError("callback_url", str(error)) from None


def parse_command(body: Mapping[str, Any], settings: Settings) -> JobRequest:
    refuse_unknown(body, COMMAND_FIELDS)
    commits = commits_field(body)
    template = location_template(body, commits)
    spec = {
        "project": project_field(body),
        "command": command_field(body, settings),
        "commits": commits,
        "commit": body.get("commit"),
        "location_template": template,
        "timeout": timeout_field(body, settings),
        "env": env_field(body),
        "callback_url": callback_field(body, settings),
    }
    # With a per-commit template the job's own document goes to its default location.
    return JobRequest("command", spec, None if template else location_field(body))


def location_template(body: Mapping[str, Any], commits: list[str]) -> str | None:
    """results_location holding `_<commit list>_`, which each commit's result replaces with `_<sha>_`."""
    location, given = body.get("results_location"), body.get("commit")
    if not isinstance(location, str) or not isinstance(given, str) or len(commits) == 1 and given != git.HISTORY:
        return None
    placeholder = f"_{given}_"
    if placeholder not in location:
        return None
    # The list's commas are outside the key alphabet; what is stored is the location with a sha in their place.
    location_field({"results_location": location.replace(placeholder, "_" + "0" * 40 + "_")})
    return location


def parse_project_request(body: Mapping[str, Any], settings: Settings) -> JobRequest:
    refuse_unknown(body, PROJECT_REQUEST_FIELDS)
    path = body.get("project_request")
    if not isinstance(path, str) or not _REQUEST_PATH.fullmatch(path):
        raise RequestError("project_request", "must be a path starting with / of printable characters, "
                                              "without spaces, at most 2048 long")
    method = body.get("request_method", "POST")
    if not isinstance(method, str) or method.upper() not in REQUEST_METHODS:
        raise RequestError("request_method", f"must be one of {', '.join(REQUEST_METHODS)}")
    request_body = body.get("request_body", "")
    if not isinstance(request_body, str):
        raise RequestError("request_body", f"must be a string of at most {MAX_REQUEST_BODY} bytes")
    try:
        size = len(request_body.encode())
    except UnicodeEncodeError:
        raise RequestError("request_body", "must be valid Unicode text (no lone UTF-16 surrogates)") from None
    if size > MAX_REQUEST_BODY:
        raise RequestError("request_body", f"must be a string of at most {MAX_REQUEST_BODY} bytes")
    content_type = body.get("request_content_type", "application/x-www-form-urlencoded")
    if not isinstance(content_type, str) or not _CONTENT_TYPE.fullmatch(content_type):
        raise RequestError("request_content_type", "must be a media type such as application/json")
    spec = {
        "project": project_field(body),
        "commits": commits_field(body, single=True),
        "path": path,
        "method": method.upper(),
        "body": request_body,
        "content_type": content_type,
        "timeout": timeout_field(body, settings),
        "env": env_field(body),
        "callback_url": callback_field(body, settings),
    }
    return JobRequest("project_request", spec, location_field(body))


def parse_github_push(body: Mapping[str, Any], settings: Settings) -> JobRequest:
    refuse_unknown(body, GITHUB_PUSH_FIELDS)
    push = body.get("push")
    if not isinstance(push, Mapping):
        raise RequestError("push", "is required: GitHub's push event payload as an object")
    try:
        spec = github.push_spec(push)
    except github.DeliveryError as error:
        raise RequestError("push", str(error)) from None
    spec["callback_url"] = callback_field(body, settings)
    return JobRequest("github_push", spec, location_field(body))
