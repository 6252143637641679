"""`POST /github`: GitHub's webhook deliveries, verified, answered at once, each delivery run at most once."""

from __future__ import annotations

from typing import Any

from server_responder.projects import github as webhooks
from server_responder.jobs.service import NotAccepting, QueueFull
from server_responder.web.http import HttpError, Incoming, Response, Route


class GitHubApi:
    def __init__(self, responder: Any) -> None:
        self.responder = responder
        self._deliveries: webhooks.DeliveryLog | None = None

    def routes(self) -> list[Route]:
        return [Route("POST", "/github", self.receive, "A GitHub webhook delivery (signed with github_secret)")]

    @property
    def deliveries(self) -> webhooks.DeliveryLog:
        if self._deliveries is None:
            self._deliveries = webhooks.DeliveryLog(self.responder.settings.data_dir / "github_deliveries")
        return self._deliveries

    def receive(self, incoming: Incoming) -> Response | dict[str, Any]:
        secret = self.responder.settings.github_secret
        if secret is None or not secret.reveal():
            # Without a secret nothing could be verified, so the route does not exist.
            raise HttpError(404, "not_found", f"no route for {incoming.path}")
        body = incoming.body
        if not webhooks.signature_matches(secret.reveal(), body, incoming.headers.get("X-Hub-Signature-256")):
            raise HttpError(401, "unauthorized", "X-Hub-Signature-256: missing, or not the HMAC-SHA256 of the body "
                                                 "with the webhook secret", field="X-Hub-Signature-256")
        event = incoming.headers.get("X-GitHub-Event", "")
        if not event:
            raise HttpError(400, "bad_request", "X-GitHub-Event: the event name is required", field="X-GitHub-Event")
        delivery = incoming.headers.get("X-GitHub-Delivery")
        if delivery is not None and not self.deliveries.valid_id(delivery):
            raise HttpError(400, "bad_request", "X-GitHub-Delivery: must be a delivery GUID",
                            field="X-GitHub-Delivery")
        try:
            payload = webhooks.delivery_payload(incoming.content_type, body)
        except webhooks.DeliveryError as error:
            raise HttpError(400, "bad_request", str(error), field=error.field) from None
        if event == "ping":
            return {"pong": True, "zen": payload.get("zen"), "hook_id": payload.get("hook_id")}
        if event != "push":
            return Response({"ignored": True, "event": event, "detail": "only push events run jobs"}, status=202)
        if webhooks.is_branch_deletion(payload):
            return Response({"ignored": True, "event": event, "detail": "a branch deletion has nothing to run"},
                            status=202)
        try:
            spec = webhooks.push_spec(payload)
        except webhooks.DeliveryError as error:
            raise HttpError(400, "bad_request", str(error), field=error.field) from None
        spec["callback_url"] = None
        return self._start_once(spec, delivery, incoming.request_id)

    def _start_once(self, spec: dict[str, Any], delivery: str | None, request_id: str) -> Response:
        jobs = self.responder.jobs
        with self.deliveries.lock:
            first = self.deliveries.job_for(delivery) if delivery else None
            if first is not None:
                job = jobs.get(first)
                shown = job.resource() if job is not None else {"id": first}
                return Response({**shown, "redelivery": True}, status=200, headers={"Location": f"/jobs/{first}"})
            try:
                job = jobs.submit("github_push", spec, request_id=request_id)
            except QueueFull as error:
                raise HttpError(429, "queue_full", str(error), headers={"Retry-After": "5"}) from None
            except NotAccepting as error:
                raise HttpError(503, "not_accepting", str(error), headers={"Retry-After": "60"}) from None
            if delivery:
                self.deliveries.record(delivery, job.id)
        return Response({**job.resource(), "redelivery": False}, status=202, headers={"Location": f"/jobs/{job.id}"})
