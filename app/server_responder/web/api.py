"""The HTTP API: parse, authorise, call the responder's services, render JSON."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from server_responder import __version__
from server_responder.jobs.containment import containment_status
from server_responder.jobs.record import Job
from server_responder.jobs.requests import parse_job_request, parse_legacy_form
from server_responder.jobs.service import DataDirUnwritable, JobNotFound, NotAccepting, QueueFull
from server_responder.jobs.types import JobRequest, NoCredentials, RequestError, Unauthorized, UnsupportedJobType
from server_responder.responder import Responder
from server_responder.results.keys import InvalidKey, validate_key
from server_responder.results.store import StoreUnavailable
from server_responder.web.http import HttpError, Incoming, Response, Route
from server_responder.web.last_request import RequestRecorder
from server_responder.web.openapi import openapi_document

MAX_WAIT_SECONDS = 600.0


class JobsApi:
    """Submitting, reading and cancelling jobs, in the JSON API and the original form protocol."""

    def __init__(self, responder: Responder, recorder: RequestRecorder | None = None) -> None:
        self.responder = responder
        self.settings = responder.settings
        self.jobs = responder.jobs
        self.recorder = recorder

    def routes(self) -> list[Route]:
        return [
            Route("POST", "/", self.submit_form, "Submit a job with the original form protocol"),
            Route("POST", "/jobs", self.submit_json, "Submit a job (token or signature)"),
            Route("GET", "/jobs", self.list_jobs, "Recent jobs (token)"),
            Route("GET", "/jobs/{job_id}", self.get_job, "One job; its id is the capability to read it"),
            Route("DELETE", "/jobs/{job_id}", self.cancel_job, "Cancel a job (token)"),
            Route("GET", "/results/{key:path}", self.get_result, "A stored result document or artifact (token)"),
        ]

    def submit_json(self, incoming: Incoming) -> Response:
        self._record(incoming)
        if incoming.content_type not in ("application/json", ""):
            raise HttpError(415, "unsupported_media_type", "Content-Type: must be application/json")
        job_request = _parsed(lambda: parse_job_request(incoming.json(), self.settings, self.responder.types,
                                                        authorized=incoming.has_token()),
                              token_sent=incoming.bearer_token() is not None)
        wait = incoming.number_param("wait", 0.0, MAX_WAIT_SECONDS)
        job = self._submit(job_request, incoming, wait)
        return Response(job.resource(), status=200 if job.finished else 202,
                        headers={"Location": f"/jobs/{job.id}"})

    def submit_form(self, incoming: Incoming) -> Response:
        self._record(incoming)
        fields = incoming.form()
        authorized = incoming.has_token(form_token=fields.get("api_token"))
        if not authorized and not fields.get("signature"):
            raise _wrong_token() if _token_sent(incoming, fields) else HttpError(
                401, "unauthorized", "api_token or signature is required")
        job_request = _parsed(lambda: parse_legacy_form(fields, self.settings, self.responder.types,
                                                              authorized=authorized))
        job = self._submit(job_request, incoming, self.settings.sync_wait_seconds)
        summary = {"job_id": job.id, "status": job.status, "results_location": job.results_location}
        if not job.finished:
            return Response({"not_complete": True, **summary}, status=202, headers={"Location": f"/jobs/{job.id}"})
        return Response({"results": job.output, "exit_status": job.exit_status, **summary})

    def _record(self, incoming: Incoming) -> None:
        if self.recorder is not None:
            self.recorder.record(incoming)

    def _submit(self, job_request: JobRequest, incoming: Incoming, wait: float = 0.0) -> Job:
        """The job accepted; with `wait`, as it is once final or `wait` seconds later."""
        with submission_errors():
            if wait > 0:
                return self.jobs.submit_and_wait(job_request.type, job_request.spec, job_request.results_location,
                                                 incoming.request_id, wait)
            return self.jobs.submit(job_request.type, job_request.spec, job_request.results_location,
                                    request_id=incoming.request_id)

    def list_jobs(self, incoming: Incoming) -> dict[str, Any]:
        incoming.require_token()
        limit = int(incoming.number_param("limit", 50, 1000))
        return {"jobs": [_summary(job) for job in self.jobs.recent(limit)], **self.jobs.counts()}

    def get_job(self, incoming: Incoming, job_id: str) -> dict[str, Any]:
        job = self.jobs.get(job_id)
        if job is None:
            raise HttpError(404, "not_found", f"no job {job_id}")
        return job.resource()

    def cancel_job(self, incoming: Incoming, job_id: str) -> Response:
        incoming.require_token()
        try:
            job = self.jobs.cancel(job_id)
        except JobNotFound:
            raise HttpError(404, "not_found", f"no job {job_id}") from None
        return Response(job.resource(), status=200 if job.finished else 202)

    def get_result(self, incoming: Incoming, key: str) -> Response:
        incoming.require_token()
        try:
            validate_key(key, "key")
        except InvalidKey as error:
            raise HttpError(400, "bad_request", str(error), field="key") from None
        try:
            found = self.responder.results.find(key)
        except StoreUnavailable as error:
            raise HttpError(503, "store_unavailable", str(error), headers={"Retry-After": "30"}) from None
        if found.stored is not None:
            return Response(found.stored.body, content_type=found.stored.content_type)
        if found.pending is not None:
            return Response({"not_complete": True, "status": found.pending.status, "job_id": found.pending.id},
                            status=202)
        raise HttpError(404, "not_found", f"no result at {key}")


class StatusApi:
    """What the box says about itself: liveness, idle state, job types, the API description."""

    def __init__(self, responder: Responder, routes_for_openapi: list[Route]) -> None:
        self.responder = responder
        self._routes = routes_for_openapi

    def routes(self) -> list[Route]:
        return [
            Route("GET", "/last_job", self.last_job, "When the box last worked (no auth)"),
            Route("GET", "/health", self.health, "Liveness and queue state"),
            Route("GET", "/index", self.index, "Available job types and their fields"),
            Route("GET", "/openapi.json", self.openapi, "This API as OpenAPI 3.1"),
        ]

    def last_job(self, incoming: Incoming) -> dict[str, Any]:
        return self.responder.idle_status().document()

    def health(self, incoming: Incoming) -> dict[str, Any]:
        jobs = self.responder.jobs
        degraded = jobs.degradations.reasons()
        return {"status": "degraded" if degraded else "ok", "degraded": degraded, "version": __version__,
                "accepting": jobs.accepting, **self.responder.counts(),
                "containment": containment_status(jobs.containment, jobs.run_as)}

    def index(self, incoming: Incoming) -> list[dict[str, Any]]:
        return self.responder.types.index()

    def openapi(self, incoming: Incoming) -> dict[str, Any]:
        return openapi_document(self._routes, self.responder.types)


@contextmanager
def submission_errors() -> Iterator[None]:
    """A job the service would not take, answered with when to try again."""
    try:
        yield
    except QueueFull as error:
        raise HttpError(429, "queue_full", str(error), headers={"Retry-After": "5"}) from None
    except NotAccepting as error:
        raise HttpError(503, "not_accepting", str(error), headers={"Retry-After": "60"}) from None
    except DataDirUnwritable as error:
        # Nothing was accepted: the job is neither spooled nor queued.
        raise HttpError(507, "insufficient_storage", str(error), headers={"Retry-After": "60"}) from None


def _token_sent(incoming: Incoming, fields: dict[str, str]) -> bool:
    return bool(fields.get("api_token")) or incoming.bearer_token() is not None


def _wrong_token() -> HttpError:
    """A token that was sent but is wrong, told apart from none at all."""
    return HttpError(401, "unauthorized", "api_token or signature does not match: the token sent is not this "
                                          "responder's API token, and no signature was sent")


def _parsed(parse, token_sent: bool = False):
    try:
        return parse()
    except NoCredentials as error:
        raise (_wrong_token() if token_sent else HttpError(401, "unauthorized", str(error))) from None
    except RequestError as error:
        raise HttpError(400, "bad_request", str(error), field=error.field) from None
    except Unauthorized as error:
        raise HttpError(401, "unauthorized", str(error)) from None
    except UnsupportedJobType as error:
        raise HttpError(501, "not_implemented", f"job type {error.args[0]} is not available on this responder",
                        type=error.args[0]) from None


def _summary(job: Job) -> dict[str, Any]:
    return {key: getattr(job, key) for key in ("id", "type", "status", "exit_status", "created_at", "started_at",
                                               "finished_at", "duration_s", "results_location")}
