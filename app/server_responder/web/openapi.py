"""The API described as OpenAPI 3.1; a test keeps it equal to the routes the app serves."""

from __future__ import annotations

from typing import Any

from server_responder import __version__

_ERROR = {"$ref": "#/components/responses/Error"}
_TOKEN = [{"bearer": []}]


def _json(schema_ref: str, description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}}


def _op(summary: str, responses: dict[str, Any], *, security: list | None = None, **extra: Any) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    operation["security"] = security if security is not None else []
    operation.update(extra)
    return operation


_HTML_PAGE = {"200": {"description": "HTML page", "content": {"text/html": {}}}}
_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{40}$"}}

PATHS: dict[str, dict[str, Any]] = {
    "/": {
        "get": _op("What this responder is, its version, health and idle state", _HTML_PAGE),
        "post": _op(
            "Submit a job with the original form protocol (api_token or signature, payload, command)",
            {"200": _json("FormResult", "The job finished within sync_wait_seconds"),
             "202": _json("FormPending", "Still running; poll /jobs/{job_id}"),
             "400": _ERROR, "401": _ERROR, "413": _ERROR, "429": _ERROR, "501": _ERROR, "503": _ERROR},
            requestBody={"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
                "type": "object", "required": ["payload"],
                "properties": {"api_token": {"type": "string"}, "signature": {"type": "string"},
                               "payload": {"type": "string", "description": "A JSON object as a string"},
                               "command": {"type": "string"}}}}}},
        ),
    },
    "/jobs": {
        "post": _op(
            "Submit a job: with the API token, or a signed script without it",
            {"200": _json("Job", "The job finished within ?wait"), "202": _json("Job", "Accepted"),
             "400": _ERROR, "401": _ERROR, "413": _ERROR, "415": _ERROR, "429": _ERROR, "501": _ERROR,
             "503": _ERROR},
            parameters=[{"name": "wait", "in": "query", "schema": {"type": "number", "minimum": 0, "maximum": 600}}],
            requestBody={"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/JobRequest"}}}},
            security=[{"bearer": []}, {}],
        ),
        "get": _op("Recent jobs", {"200": _json("JobList", "Newest first"), "401": _ERROR}, security=_TOKEN,
                   parameters=[{"name": "limit", "in": "query", "schema": {"type": "integer", "maximum": 1000}}]),
    },
    "/jobs/{job_id}": {
        "get": _op("One job; knowing its unguessable id is what allows reading it",
                   {"200": _json("Job", "The job"), "404": _ERROR}, parameters=[_JOB_ID]),
        "delete": _op("Cancel a queued or running job",
                      {"200": _json("Job", "Cancelled"), "202": _json("Job", "Being stopped"), "401": _ERROR,
                       "404": _ERROR}, security=_TOKEN, parameters=[_JOB_ID]),
    },
    "/results/{key}": {
        "get": _op("A stored result document or artifact",
                   {"200": {"description": "The stored object with its content type"},
                    "202": _json("NotComplete", "A queued or running job will write this key"),
                    "400": _ERROR, "401": _ERROR, "404": _ERROR,
                    "503": _ERROR},
                   security=_TOKEN,
                   parameters=[{"name": "key", "in": "path", "required": True,
                                "description": "A results key; may contain /",
                                "schema": {"type": "string", "pattern": "^[A-Za-z0-9._/-]{1,512}$"}}]),
    },
    "/last_job": {
        "get": _op("When the box last worked, and whether it is busy",
                   {"200": _json("LastJob", "Idle state")}),
    },
    "/drain": {
        "post": _op("Stop accepting jobs (503 with Retry-After) and let the queued and running ones finish",
                    {"200": _json("LastJob", "Drained: nothing queued or running"),
                     "202": _json("LastJob", "Draining: jobs still queued or running"), "400": _ERROR,
                     "401": _ERROR},
                    security=_TOKEN,
                    parameters=[{"name": "wait", "in": "query", "description": "seconds to wait for the drain",
                                 "schema": {"type": "number", "minimum": 0, "maximum": 600}}]),
        "delete": _op("Accept jobs again", {"200": _json("LastJob", "Accepting"), "401": _ERROR},
                      security=_TOKEN),
    },
    "/health": {"get": _op("Liveness and queue state", {"200": _json("Health", "Alive")})},
    "/index": {"get": _op("Job types this responder runs, with their fields",
                          {"200": {"description": "A list of job types",
                                   "content": {"application/json": {"schema": {"type": "array"}}}}})},
    "/example": {"get": _op("Example scripts, signed when the page is rendered, to run from the page", _HTML_PAGE)},
    "/admin": {"get": _op("Recent jobs, the last request (credentials redacted), idle state and settings",
                          {**_HTML_PAGE, "401": _ERROR, "404": _ERROR},
                          description="HTTP basic auth, user `admin`, password `admin_pass`; 404 when no "
                                      "admin_pass is configured.")},
    "/static/{name}": {"get": _op("The pages' stylesheet, script and icon",
                                  {"200": {"description": "The file", "content": {
                                      "text/css": {}, "text/javascript": {}, "image/svg+xml": {}}},
                                   "404": _ERROR},
                                  parameters=[{"name": "name", "in": "path", "required": True,
                                               "schema": {"type": "string"}}])},
    "/openapi.json": {"get": _op("This document", {"200": {"description": "OpenAPI 3.1",
                                                           "content": {"application/json": {}}}})},
}

_NULLABLE_STRING = {"type": ["string", "null"]}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error", "detail"],
              "properties": {"error": {"type": "string"}, "detail": {"type": "string"},
                             "field": {"type": "string"}}},
    "JobRequest": {
        "type": "object",
        "properties": {
            "type": {"type": "string", "default": "script"},
            "language": {"type": "string", "default": "python"},
            "script": {"type": "string"},
            "results_location": {"type": "string", "pattern": "^[A-Za-z0-9._/-]{1,512}$"},
            "timeout": {"type": "number", "exclusiveMinimum": 0},
            "env": {"type": "object", "additionalProperties": {"type": "string"}},
            "upload_urls": {"type": "object", "description": "Presigned PUT URLs the result and artifacts are "
                            "also written to (from `server-responder presign`)",
                            "properties": {"result": {"type": "string", "format": "uri"},
                                           "artifacts": {"type": "object",
                                                         "additionalProperties": {"type": "string",
                                                                                  "format": "uri"}}},
                            "additionalProperties": False},
            "signature": {"type": "string", "description": "v1:<hex> from `server-responder sign`"},
            "expires": {"type": ["integer", "null"]},
        },
        "additionalProperties": True,
    },
    "Job": {
        "type": "object",
        "properties": {
            "id": {"type": "string"}, "type": {"type": "string"},
            "status": {"enum": ["queued", "running", "succeeded", "failed", "timed_out", "cancelled",
                                "interrupted"]},
            "exit_status": {"type": ["integer", "null"]}, "signal": _NULLABLE_STRING,
            "stdout": {"type": "string"}, "stderr": {"type": "string"}, "output": {"type": "string"},
            "truncated": {"type": "boolean"}, "timed_out": {"type": "boolean"},
            "created_at": {"type": "string"}, "started_at": _NULLABLE_STRING, "finished_at": _NULLABLE_STRING,
            "duration_s": {"type": ["number", "null"]}, "results_location": {"type": "string"},
            "artifacts": {"type": "array"}, "error": _NULLABLE_STRING,
        },
    },
    "JobList": {"type": "object", "properties": {"jobs": {"type": "array"}, "queued_jobs": {"type": "integer"},
                                                 "running_jobs": {"type": "integer"}}},
    "FormResult": {"type": "object", "properties": {"results": {"type": "string"},
                                                    "exit_status": {"type": ["integer", "null"]},
                                                    "job_id": {"type": "string"}, "status": {"type": "string"},
                                                    "results_location": {"type": "string"}}},
    "FormPending": {"type": "object", "properties": {"not_complete": {"const": True}, "job_id": {"type": "string"},
                                                     "status": {"type": "string"},
                                                     "results_location": {"type": "string"}}},
    "NotComplete": {"type": "object", "properties": {"not_complete": {"const": True}, "status": {"type": "string"},
                                                     "job_id": {"type": "string"}}},
    "LastJob": {"type": "object", "properties": {"last_time": _NULLABLE_STRING, "last_started": _NULLABLE_STRING,
                                                 "last_finished": _NULLABLE_STRING, "booted_at": {"type": "string"},
                                                 "running_jobs": {"type": "integer"},
                                                 "queued_jobs": {"type": "integer"},
                                                 "idle_seconds": {"type": "number", "minimum": 0,
                                                                  "description": "0 while a job is queued or running"},
                                                 "pending_uploads": {"type": "integer", "description":
                                                                     "Results not yet in the store: the box "
                                                                     "is kept up a while for them"},
                                                 "draining": {"type": "boolean"},
                                                 "drained": {"type": "boolean"}}},
    "Health": {"type": "object", "properties": {"status": {"const": "ok"}, "version": {"type": "string"},
                                                "accepting": {"type": "boolean"},
                                                "running_jobs": {"type": "integer"},
                                                "queued_jobs": {"type": "integer"},
                                                "pending_uploads": {"type": "integer", "description":
                                                                    "Spooled results not yet delivered"},
                                                "failed_uploads": {"type": "integer", "description":
                                                                   "Uploads a presigned URL refused, kept "
                                                                   "in the data dir"}}},
}


# Project jobs: the fields of the command, project_request and github_push job types, and the webhook route.
SCHEMAS["JobRequest"]["properties"].update({
    "project": {"type": "string", "pattern": "^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+$",
                "description": "owner/name, appended to repo_base_url"},
    "command": {"type": "string", "description": "run through /bin/sh -c in the checkout"},
    "commit": {"type": "string", "description": "a sha or ref, a comma-separated list, or history"},
    "project_request": {"type": "string", "pattern": "^/", "description": "path sent to the project's web app"},
    "request_method": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"], "default": "POST"},
    "request_body": {"type": "string"},
    "request_content_type": {"type": "string", "default": "application/x-www-form-urlencoded"},
    "push": {"type": "object", "description": "a GitHub push event payload (type github_push)"},
    "callback_url": {"type": "string", "format": "uri", "description": "POSTed a Callback when the job ends"},
})
SCHEMAS["Callback"] = {
    "type": "object",
    "properties": {"job_id": {"type": "string"}, "status": {"type": "string"},
                   "exit_status": {"type": ["integer", "null"]}, "project_key": _NULLABLE_STRING,
                   "commit_key": _NULLABLE_STRING, "results_location": {"type": "string"},
                   "commit_keys": {"type": "array", "items": {"type": "string"}}},
}
SCHEMAS["WebhookAnswer"] = {
    "type": "object",
    "properties": {"pong": {"const": True}, "zen": _NULLABLE_STRING, "ignored": {"type": "boolean"},
                   "event": {"type": "string"}, "detail": {"type": "string"}, "redelivery": {"type": "boolean"},
                   "id": {"type": "string"}, "status": {"type": "string"}},
}
_GITHUB_HEADERS = [
    {"name": "X-Hub-Signature-256", "in": "header", "required": True, "schema": {"type": "string"},
     "description": "sha256=<hex HMAC-SHA256 of the raw body with github_secret>"},
    {"name": "X-GitHub-Event", "in": "header", "required": True, "schema": {"type": "string"}},
    {"name": "X-GitHub-Delivery", "in": "header", "schema": {"type": "string"},
     "description": "a redelivery of a known delivery returns the first job"},
]
PATHS["/github"] = {
    "post": _op(
        "A GitHub webhook delivery: ping answered, push runs .deferred_server at the pushed commit, others ignored; "
        "404 when no github_secret is set",
        {"200": _json("WebhookAnswer", "ping answered, or a redelivery: the job the first delivery started"),
         "202": _json("WebhookAnswer", "push accepted (the job), or the event or branch deletion ignored"),
         "400": _ERROR, "401": _ERROR, "404": _ERROR, "413": _ERROR, "429": _ERROR, "503": _ERROR},
        parameters=_GITHUB_HEADERS,
        requestBody={"required": True, "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/x-www-form-urlencoded": {"schema": {"type": "object", "required": ["payload"],
                                                             "properties": {"payload": {"type": "string"}}}}}},
    ),
}


def openapi_document(routes: object = None) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Server Responder", "version": __version__,
                 "description": "Runs jobs when asked over HTTP and reports what happened."},
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {"Error": {"description": "An error naming what is wrong",
                                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
        },
    }
