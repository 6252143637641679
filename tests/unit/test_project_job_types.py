"""Request fields of the project job types, through the same entry points the HTTP API uses."""

import json
from pathlib import Path

import pytest

from server_responder.jobs.requests import parse_job_request, parse_legacy_form
from server_responder.jobs.types import JobType, JobTypes, RequestError, UnsupportedJobType
from server_responder.responder import job_types
from server_responder.settings import Settings

SHA = "c" * 40


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_mapping({"data_dir": str(tmp_path), "default_command": "churn --yaml"})


def parse(body, settings, types=None):
    return parse_job_request(body, settings, types or job_types(settings), authorized=True)


def test_command_job_with_defaults(settings):
    request = parse({"type": "command", "project": "acme/widget"}, settings)
    assert request.type == "command" and request.results_location is None
    assert request.spec["command"] == "churn --yaml" and request.spec["commits"] == ["HEAD"]


def test_command_list_with_a_per_commit_location(settings):
    body = {"type": "command", "project": "acme/widget", "command": "make", "commit": f"{SHA},main",
            "results_location": f"reports/acme_{SHA},main_churn"}
    request = parse(body, settings)
    assert request.spec["commits"] == [SHA, "main"]
    assert request.spec["location_template"] == body["results_location"]
    assert request.results_location is None


def test_history_with_its_placeholder(settings):
    body = {"type": "command", "project": "acme/widget", "commit": "history", "results_location": "r/_history_"}
    request = parse(body, settings)
    assert request.spec["commits"] == ["history"] and request.spec["location_template"] == "r/_history_"


@pytest.mark.parametrize(("body", "field"), [
    ({"project": "../etc/passwd"}, "project"),
    ({"project": "acme/widget;touch /tmp/x"}, "project"),
    ({"project": "acme/$(id)"}, "project"),
    ({}, "project"),
    ({"project": "acme/widget", "commit": ";rm -rf /"}, "commit"),
    ({"project": "acme/widget", "commit": "--upload-pack=id"}, "commit"),
    ({"project": "acme/widget", "commit": "main,;id"}, "commit"),
    ({"project": "acme/widget", "command": ""}, "command"),
    ({"project": "acme/widget", "command": ["sh", "-c", "id"]}, "command"),
    ({"project": "acme/widget", "results_location": "../../etc"}, "results_location"),
    ({"project": "acme/widget", "callback_url": "file:///etc/passwd"}, "callback_url"),
    ({"project": "acme/widget", "env": {"A B": "1"}}, "env"),
    ({"project": "acme/widget", "surprise": 1}, "surprise"),
])
def test_bad_command_fields_are_named(settings, body, field):
    with pytest.raises(RequestError) as failure:
        parse({"type": "command", **body}, settings)
    assert failure.value.field == field


def test_project_request_fields(settings):
    request = parse({"type": "project_request", "project": "acme/widget", "project_request": "/hello?x=1",
                     "request_method": "put", "request_body": "{}", "request_content_type": "application/json"},
                    settings)
    assert request.spec["method"] == "PUT" and request.spec["path"] == "/hello?x=1"
    assert request.spec["commits"] == ["HEAD"]
    default = parse({"type": "project_request", "project": "acme/widget", "project_request": "/"}, settings)
    assert default.spec["method"] == "POST" and default.spec["body"] == ""


@pytest.mark.parametrize(("body", "field"), [
    ({"project_request": "hello"}, "project_request"),
    ({"project_request": "/a b"}, "project_request"),
    ({"project_request": "/x\r\nHost: evil"}, "project_request"),
    ({"project_request": "/", "request_method": "TRACE"}, "request_method"),
    ({"project_request": "/", "commit": "history"}, "commit"),
    ({"project_request": "/", "commit": "a,b"}, "commit"),
    ({"project_request": "/", "request_content_type": "text/plain\r\nX: y"}, "request_content_type"),
])
def test_bad_project_request_fields_are_named(settings, body, field):
    with pytest.raises(RequestError) as failure:
        parse({"type": "project_request", "project": "acme/widget", **body}, settings)
    assert failure.value.field == field


def test_the_original_form_dispatches_to_the_project_job_types(settings):
    def form(payload, **fields):
        return parse_legacy_form({"payload": json.dumps(payload), **fields}, settings, job_types(settings),
                                 authorized=True)

    assert form({"project": "acme/widget", "project_request": "/hi"}).type == "project_request"
    command = form({"project": "acme/widget", "commit": SHA}, command="rake test")
    assert command.type == "command" and command.spec["command"] == "rake test"
    push = form({"after": SHA, "ref": "refs/heads/main", "repository": {"full_name": "acme/widget"}})
    assert push.type == "github_push" and push.spec["sha"] == SHA and push.spec["project"] == "acme/widget"
    with pytest.raises(RequestError) as failure:
        form({"after": "0" * 40, "repository": {"full_name": "acme/widget"}})
    assert failure.value.field == "push"


def test_a_known_type_without_a_parser_is_unsupported(settings):
    types = JobTypes.of([*job_types(settings), JobType("future", (), None, None)])
    assert not types.get("future").supported
    with pytest.raises(UnsupportedJobType):
        parse({"type": "future"}, settings, types)
