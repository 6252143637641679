"""The API described as OpenAPI 3.1: paths from the route table, job request schemas from the job-type table."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from server_responder import __version__
from server_responder.jobs.types import JobType, JobTypes
from server_responder.web.http import Route

_ERROR = {"$ref": "#/components/responses/Error"}
_TOKEN = [{"bearer": []}]
_KEY_PATTERN = "^[A-Za-z0-9._/-]{1,512}$"


def _json(schema_ref: str, description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}}


def _op(summary: str, responses: dict[str, Any], *, security: list | None = None, **extra: Any) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    operation["security"] = security if security is not None else []
    operation.update(extra)
    return operation


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): _ERROR for status in statuses}


def _object(properties: dict[str, Any], *, required: Iterable[str] | None = None,
            closed: bool = True) -> dict[str, Any]:
    """An object schema; `closed` ones list every property the service answers with, so drift fails the test."""
    schema: dict[str, Any] = {"type": "object", "properties": properties,
                              "required": sorted(properties if required is None else required)}
    if closed:
        schema["additionalProperties"] = False
    return schema


_HTML_PAGE = {"200": {"description": "HTML page", "content": {"text/html": {"schema": {"type": "string"}}}}}
_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
_WAIT = {"name": "wait", "in": "query", "schema": {"type": "number", "minimum": 0, "maximum": 600}}
_GITHUB_HEADERS = [
    {"name": "X-Hub-Signature-256", "in": "header", "required": True, "schema": {"type": "string"},
     "description": "sha256=<hex HMAC-SHA256 of the raw body with github_secret>"},
    {"name": "X-GitHub-Event", "in": "header", "required": True, "schema": {"type": "string"}},
    {"name": "X-GitHub-Delivery", "in": "header", "schema": {"type": "string"},
     "description": "a redelivery of a known delivery returns the first job"},
]

# Keyed as the route table names them; a route without an entry here fails to describe itself.
OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/"): _op("What this responder is, its version, health and idle state", _HTML_PAGE),
    ("POST", "/"): _op(
        "Submit a job with the original form protocol (api_token or signature, payload, command)",
        {"200": _json("FormResult", "The job finished within sync_wait_seconds"),
         "202": _json("FormPending", "Still running; poll /jobs/{job_id}"),
         **_errors(400, 401, 413, 429, 501, 503, 507)},
        requestBody={"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
            "type": "object", "required": ["payload"],
            "properties": {"api_token": {"type": "string"}, "signature": {"type": "string"},
                           "payload": {"type": "string", "description": "A JSON object as a string"},
                           "command": {"type": "string"}}}}}},
    ),
    ("POST", "/jobs"): _op(
        "Submit a job: with the API token, or a signed script without it",
        {"200": _json("Job", "The job finished within ?wait"), "202": _json("Job", "Accepted"),
         **_errors(400, 401, 413, 415, 429, 501, 503, 507)},
        parameters=[_WAIT],
        requestBody={"required": True, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/JobRequest"}}}},
        security=[{"bearer": []}, {}],
    ),
    ("GET", "/jobs"): _op("Recent jobs", {"200": _json("JobList", "Newest first"), **_errors(400, 401)},
                          security=_TOKEN,
                          parameters=[{"name": "limit", "in": "query", "description": "how many jobs (default 50)",
                                       "schema": {"type": "integer", "minimum": 0, "maximum": 1000}}]),
    ("GET", "/jobs/{job_id}"): _op("One job; knowing its unguessable id is what allows reading it",
                                   {"200": _json("Job", "The job"), **_errors(404)}, parameters=[_JOB_ID]),
    ("GET", "/jobs/{job_id}/events"): _op(
        "One job as Server-Sent Events: its output as it arrives, its status changes, then its record",
        {"200": {"description": "An event stream that closes after the `job` event",
                 "content": {"text/event-stream": {"schema": {"type": "string"}}}},
         **_errors(400, 404, 503)},
        description="Events, each with JSON data: `status` ({status}); `stdout` and `stderr` ({text}, with an id "
                    "`<stdout bytes>-<stderr bytes>`, the reader's position after it); `dropped` ({stream, bytes}: "
                    "output no longer kept when the reader fell behind); `job` (the job as GET /jobs/{job_id} "
                    "answers), the last. Comments keep the connection alive. Resume from an id with the "
                    "Last-Event-ID header, or the last_event_id query parameter. 503 when max_event_streams are "
                    "open.",
        parameters=[_JOB_ID,
                    {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"},
                     "description": "the id of the last event seen: output resumes after it"},
                    {"name": "last_event_id", "in": "query", "schema": {"type": "string"},
                     "description": "as Last-Event-ID, for clients that cannot set headers"}]),
    ("GET", "/metrics"): _op(
        "Counts of jobs, uploads and the box, in the Prometheus text format",
        {"200": {"description": "Prometheus text exposition format",
                 "content": {"text/plain": {"schema": {"type": "string"}}}},
         **_errors(401)},
        security=[{"bearer": []}, {}],
        description="The API token is required unless metrics_public is set."),
    ("DELETE", "/jobs/{job_id}"): _op("Cancel a queued or running job",
                                      {"200": _json("Job", "Cancelled"), "202": _json("Job", "Being stopped"),
                                       **_errors(401, 404)}, security=_TOKEN, parameters=[_JOB_ID]),
    ("GET", "/results/{key}"): _op(
        "A stored result document or artifact",
        {"200": {"description": "The stored object with its content type", "content": {"*/*": {}}},
         "202": _json("NotComplete", "A queued or running job will write this key"),
         **_errors(400, 401, 404, 503)},
        security=_TOKEN,
        parameters=[{"name": "key", "in": "path", "required": True, "description": "A results key; may contain /",
                     "schema": {"type": "string", "pattern": _KEY_PATTERN}}]),
    ("GET", "/last_job"): _op("When the box last worked, and whether it is busy",
                              {"200": _json("LastJob", "Idle state")}),
    ("POST", "/drain"): _op("Stop accepting jobs (503 with Retry-After) and let the queued and running ones finish",
                            {"200": _json("LastJob", "Drained: nothing queued or running"),
                             "202": _json("LastJob", "Draining: jobs still queued or running"),
                             **_errors(400, 401)},
                            security=_TOKEN,
                            parameters=[{**_WAIT, "description": "seconds to wait for the drain"}]),
    ("DELETE", "/drain"): _op("Accept jobs again", {"200": _json("LastJob", "Accepting"), **_errors(401)},
                              security=_TOKEN),
    ("GET", "/health"): _op("Liveness and queue state", {"200": _json("Health", "Alive")}),
    ("GET", "/index"): _op("Job types this responder runs, with their fields", {"200": _json("Index", "Job types")}),
    ("GET", "/openapi.json"): _op("This document", {"200": {"description": "OpenAPI 3.1",
                                                            "content": {"application/json": {
                                                                "schema": {"type": "object"}}}}}),
    ("GET", "/example"): _op("Example scripts, signed when the page is rendered, to run from the page", _HTML_PAGE),
    ("GET", "/admin"): _op("Recent jobs, the last request (credentials redacted), idle state and settings",
                           {**_HTML_PAGE, **_errors(401, 404)},
                           description="HTTP basic auth, user `admin`, password `admin_pass`; 404 when no "
                                       "admin_pass is configured."),
    ("GET", "/static/{name}"): _op("The pages' stylesheet, script and icon",
                                   {"200": {"description": "The file", "content": {
                                       "text/css": {}, "text/javascript": {}, "image/svg+xml": {}}},
                                    **_errors(404)},
                                   parameters=[{"name": "name", "in": "path", "required": True,
                                                "schema": {"type": "string"}}]),
    ("POST", "/github"): _op(
        "A GitHub webhook delivery: ping answered, push runs .deferred_server at the pushed commit, others ignored; "
        "404 when no github_secret is set",
        {"200": _json("WebhookAnswer", "ping answered, or a redelivery: the job the first delivery started"),
         "202": _json("WebhookAnswer", "push accepted (the job), or the event or branch deletion ignored"),
         **_errors(400, 401, 404, 413, 429, 503, 507)},
        parameters=_GITHUB_HEADERS,
        requestBody={"required": True, "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/x-www-form-urlencoded": {"schema": {"type": "object", "required": ["payload"],
                                                             "properties": {"payload": {"type": "string"}}}}}},
    ),
}

_NULLABLE_STRING = {"type": ["string", "null"]}
_NULLABLE_INTEGER = {"type": ["integer", "null"]}
_NULLABLE_NUMBER = {"type": ["number", "null"]}
_STATUS = {"enum": ["queued", "running", "succeeded", "failed", "timed_out", "cancelled", "interrupted"]}
_JOB_PROPERTIES = {
    "id": {"type": "string"}, "type": {"type": "string"}, "status": _STATUS,
    "results_location": {"type": "string"}, "language": _NULLABLE_STRING,
    "created_at": {"type": "string"}, "started_at": _NULLABLE_STRING, "finished_at": _NULLABLE_STRING,
    "duration_s": _NULLABLE_NUMBER, "exit_status": _NULLABLE_INTEGER, "signal": _NULLABLE_STRING,
    "cmd_run": _NULLABLE_STRING, "stdout": {"type": "string"}, "stderr": {"type": "string"},
    "output": {"type": "string"}, "truncated": {"type": "boolean"}, "timed_out": {"type": "boolean"},
    "artifacts": {"type": "array", "items": {"type": "object"}},
    "skipped_artifacts": {
        "type": "array", "description": "entries of artifacts/ not stored, and why (`.` is the directory itself)",
        "items": {"type": "object", "required": ["name", "reason"],
                  "properties": {"name": {"type": "string"}, "reason": {"type": "string"}}}},
    "error": _NULLABLE_STRING,
    "details": {"type": "object", "description": "what the job type adds: project, commit keys, runs, response"},
    "request_id": _NULLABLE_STRING,
    "oom_killed": {"type": "boolean", "description": "a process of the job was killed for exceeding job_memory_max"},
    "peak_memory_bytes": {"type": ["integer", "null"],
                          "description": "the job's peak memory, where the kernel reports it"},
}
_CONTAINMENT = _object({
    "kind": {"enum": ["cgroup2", "cgroup2-kill+v1-limits", "cgroup2-kill", "subreaper"]},
    "limits": _object({"memory_max": {"type": "integer"}, "pids_max": {"type": "integer"},
                       "cpu_weight": {"type": "integer"}}, required=[]),
    "job_user": {"type": "string"},
    "jobs_share_service_user": {"type": "boolean",
                                "description": "jobs run as the service's own user and can read what it can"},
}, required=["kind", "limits", "job_user", "jobs_share_service_user"])
_COUNTS = {"running_jobs": {"type": "integer", "minimum": 0}, "queued_jobs": {"type": "integer", "minimum": 0}}
_UPLOAD_COUNTS = {
    "pending_uploads": {"type": "integer", "description": "Spooled results not yet delivered"},
    "failed_uploads": {"type": "integer", "description": "Uploads a presigned URL refused, kept in the data dir"},
    "pending_callbacks": {"type": "integer", "description": "Completion callbacks spooled, not yet delivered"},
    "failed_callbacks": {"type": "integer", "description": "Completion callbacks a receiver refused (4xx), kept in "
                                                           "the data dir"},
}
_SUMMARY_KEYS = ("id", "type", "status", "exit_status", "created_at", "started_at", "finished_at", "duration_s",
                 "results_location")

SCHEMAS: dict[str, Any] = {
    "Error": _object({"error": {"type": "string"}, "detail": {"type": "string"}, "field": {"type": "string"},
                      "type": {"type": "string", "description": "the job type a 501 is about"}},
                     required=["error", "detail"]),
    "Job": _object(_JOB_PROPERTIES),
    "JobSummary": _object({key: _JOB_PROPERTIES[key] for key in _SUMMARY_KEYS}),
    "JobList": _object({"jobs": {"type": "array", "items": {"$ref": "#/components/schemas/JobSummary"}},
                        **_COUNTS}),
    "FormResult": _object({"results": {"type": "string"}, "exit_status": _NULLABLE_INTEGER,
                           "job_id": {"type": "string"}, "status": _STATUS, "results_location": {"type": "string"}}),
    "FormPending": _object({"not_complete": {"const": True}, "job_id": {"type": "string"}, "status": _STATUS,
                            "results_location": {"type": "string"}}),
    "NotComplete": _object({"not_complete": {"const": True}, "status": _STATUS, "job_id": {"type": "string"}}),
    "LastJob": _object({"last_time": _NULLABLE_STRING, "last_started": _NULLABLE_STRING,
                        "last_finished": _NULLABLE_STRING, "booted_at": {"type": "string"}, **_COUNTS,
                        "idle_seconds": {"type": "number", "minimum": 0,
                                         "description": "0 while a job is queued or running"},
                        "pending_uploads": {"type": "integer", "description": "Results not yet in the store: the "
                                                                              "box is kept up a while for them"},
                        "draining": {"type": "boolean"}, "drained": {"type": "boolean"}}),
    "Health": _object({"status": {"enum": ["ok", "degraded"]},
                       "degraded": {"type": "array", "items": {"type": "string"},
                                    "description": "Why the service cannot fully work (a data dir it cannot write, "
                                                   "a failing result store); empty when the status is ok"},
                       "version": {"type": "string"}, "accepting": {"type": "boolean"},
                       **_COUNTS, **_UPLOAD_COUNTS, "containment": _CONTAINMENT},
                      required=["status", "degraded", "version", "accepting", *_COUNTS]),
    "Index": {"type": "array", "items": _object({
        "type": {"type": "string"},
        "fields": {"type": "object", "additionalProperties": {"type": "string"},
                   "description": "each field of the job type's request, described"}})},
    "Callback": _object({"job_id": {"type": "string"}, "status": _STATUS, "exit_status": _NULLABLE_INTEGER,
                         "project_key": _NULLABLE_STRING, "commit_key": _NULLABLE_STRING,
                         "results_location": {"type": "string"},
                         "commit_keys": {"type": "array", "items": {"type": "string"}}},
                        required=["job_id", "status", "exit_status", "project_key", "commit_key",
                                  "results_location"]),
    "WebhookAnswer": {"anyOf": [
        _object({"pong": {"const": True}, "zen": _NULLABLE_STRING, "hook_id": _NULLABLE_INTEGER}),
        _object({"ignored": {"const": True}, "event": {"type": "string"}, "detail": {"type": "string"}}),
        _object({**_JOB_PROPERTIES, "redelivery": {"type": "boolean"}}),
        _object({"id": {"type": "string"}, "redelivery": {"const": True}}),
    ]},
}


def job_request_schema(entry: JobType) -> dict[str, Any]:
    """One job type's request body, from its entry in the job-type table."""
    properties: dict[str, Any] = {"type": {"const": entry.name}}
    for request_field in entry.fields:
        properties[request_field.name] = {**request_field.schema, "description": request_field.description}
    required = [request_field.name for request_field in entry.fields if request_field.required]
    if entry.name != "script":
        # Only a script may leave `type` out.
        required.insert(0, "type")
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def _schema_name(job_type: str) -> str:
    return "".join(part.capitalize() for part in job_type.split("_")) + "JobRequest"


def openapi_document(routes: Iterable[Route], types: JobTypes) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        path = route.pattern.replace(":path}", "}")
        paths.setdefault(path, {})[route.method.lower()] = OPERATIONS[(route.method, path)]
    request_schemas = {_schema_name(entry.name): job_request_schema(entry) for entry in types}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Server Responder", "version": __version__,
                 "description": "Runs jobs when asked over HTTP and reports what happened."},
        "paths": paths,
        "components": {
            "schemas": {
                **SCHEMAS, **request_schemas,
                "JobRequest": {"oneOf": [{"$ref": f"#/components/schemas/{name}"} for name in request_schemas]},
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {"Error": {"description": "An error naming what is wrong", "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
        },
    }
