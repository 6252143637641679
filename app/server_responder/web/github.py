"""`POST /github`: GitHub's webhook deliveries, verified, answered at once, each delivery run at most once."""

from __future__ import annotations

from typing import Any

from server_responder.projects import github
from server_responder.responder import Responder
from server_responder.web.api import submission_errors
from server_responder.web.http import HttpError, Incoming, Response, Route


class GitHubApi:
    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        self.deliveries = responder.deliveries

    def routes(self) -> list[Route]:
        return [Route("POST", "/github", self.receive, "A GitHub webhook delivery (signed with github_secret)")]

    def receive(self, incoming: Incoming) -> Response | dict[str, Any]:
        secret = self.responder.settings.github_secret
        if secret is None or not secret.reveal():
            # Without a secret nothing could be verified, so the route does not exist.
            raise HttpError(404, "not_found", f"no route for {incoming.path}")
        # GitHub sends pushes of up to 25 MB: webhooks have their own limit.
        body = incoming.body_within(self.responder.settings.max_webhook_body_bytes, "max_webhook_body_bytes")
        if not github.signature_matches(secret.reveal(), body, incoming.headers.get("X-Hub-Signature-256")):
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
            payload = github.delivery_payload(incoming.content_type, body)
        except github.DeliveryError as error:
            raise HttpError(400, "bad_request", str(error), field=error.field) from None
        if event == "ping":
            return {"pong": True, "zen": payload.get("zen"), "hook_id": payload.get("hook_id")}
        if event != "push":
            return Response({"ignored": True, "event": event, "detail": "only push events run jobs"}, status=202)
        if github.is_branch_deletion(payload):
            return Response({"ignored": True, "event": event, "detail": github.deletion_detail(payload)},
                            status=202)
        try:
            spec = github.push_spec(payload)
        except github.DeliveryError as error:
            raise HttpError(400, "bad_request", str(error), field=error.field) from None
        spec["callback_url"] = None
        return self._start_once(spec, delivery, incoming.request_id)

    def _start_once(self, spec: dict[str, Any], delivery: str | None, request_id: str) -> Response:
        with submission_errors():
            started = self.deliveries.start_once(spec, delivery, request_id)
        shown = started.job.resource() if started.job is not None else {"id": started.job_id}
        return Response({**shown, "redelivery": started.redelivery}, status=200 if started.redelivery else 202,
                        headers={"Location": f"/jobs/{started.job_id}"})
