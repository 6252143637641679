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


_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{40}$"}}

PATHS: dict[str, dict[str, Any]] = {
    "/": {
        "get": _op("A page saying the responder is alive",
                   {"200": {"description": "HTML page", "content": {"text/html": {}}}}),
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
                    "400": _ERROR, "401": _ERROR, "404": _ERROR},
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
                                                 "draining": {"type": "boolean"},
                                                 "drained": {"type": "boolean"}}},
    "Health": {"type": "object", "properties": {"status": {"const": "ok"}, "version": {"type": "string"},
                                                "accepting": {"type": "boolean"},
                                                "running_jobs": {"type": "integer"},
                                                "queued_jobs": {"type": "integer"}}},
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
