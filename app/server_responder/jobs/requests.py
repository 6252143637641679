"""Turning what a caller sent into a validated job: every field checked, every mistake named."""

from __future__ import annotations

import json
import math
import re
from urllib.parse import urlsplit
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from server_responder import signing
from server_responder.results.keys import InvalidKey, validate_key
from server_responder.settings import Settings

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_ENV_ENTRIES = 100


class RequestError(ValueError):
    """A field is missing or wrong: `field` names it, the message says what is expected."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


class Unauthorized(PermissionError):
    """Neither a valid token nor a valid signature."""


class UnsupportedJobType(LookupError):
    """A job type this responder knows of but cannot run."""


@dataclass(frozen=True)
class JobRequest:
    type: str
    spec: dict[str, Any]
    results_location: str | None


Parser = Callable[[Mapping[str, Any], Settings], JobRequest]

# Every job type with the fields it takes, as `GET /index` lists them.
JOB_TYPES: dict[str, dict[str, str]] = {
    "script": {
        "script": "the script's source (required)",
        "language": "an interpreter name from `languages` (default python)",
        "results_location": "store key for the result document (default results/<job id>)",
        "timeout": "seconds before the job is killed (default default_timeout, at most max_timeout)",
        "env": "extra environment variables for the job (token only)",
        "upload_urls": "presigned PUT URLs the result and artifacts are also written to: "
                       "{\"result\": url, \"artifacts\": {name: url}} (token only; see `server-responder presign`)",
        "signature": "v1 signature instead of a token (see `server-responder sign`)",
        "expires": "Unix time the signature expires, as signed",
    },
}
PARSERS: dict[str, Parser] = {}


def register_job_type(name: str, fields: dict[str, str], parser: Parser) -> None:
    JOB_TYPES[name] = fields
    PARSERS[name] = parser


def parse_job_request(body: Any, settings: Settings, *, authorized: bool) -> JobRequest:
    """Validate a JSON job request; `authorized` is whether the caller presented the API token."""
    if not isinstance(body, Mapping):
        raise RequestError("body", "must be a JSON object")
    job_type = body.get("type", "script")
    if not isinstance(job_type, str):
        raise RequestError("type", "must be a string")
    if not authorized:
        if body.get("signature") is None:
            raise Unauthorized("an API token or a signature is required")
        if job_type != "script":
            raise Unauthorized("only script jobs may be signed; other job types need the API token")
        return parse_signed_script(body, settings)
    if job_type not in PARSERS:
        if job_type in JOB_TYPES:
            raise UnsupportedJobType(job_type)
        raise RequestError("type", f"unknown job type {job_type!r}; one of {', '.join(sorted(JOB_TYPES))}")
    return PARSERS[job_type](body, settings)


def parse_script(body: Mapping[str, Any], settings: Settings) -> JobRequest:
    _refuse_unknown(body, JOB_TYPES["script"])
    spec = {
        "language": language_field(body, settings),
        "script": script_field(body),
        "timeout": timeout_field(body, settings),
        "env": env_field(body),
    }
    upload_urls = upload_urls_field(body)
    if upload_urls:
        spec["upload_urls"] = upload_urls
    return JobRequest("script", spec, location_field(body))


PARSERS["script"] = parse_script


def parse_signed_script(body: Mapping[str, Any], settings: Settings) -> JobRequest:
    """A script a public page may run: exactly as signed, with the default limits and no env."""
    if settings.code_secret is None:
        raise Unauthorized("signed scripts are disabled: no code_secret is configured")
    for field in ("env", "timeout", "upload_urls"):
        if body.get(field) is not None:
            raise RequestError(field, "is not allowed on a signed script; it needs the API token")
    _refuse_unknown(body, JOB_TYPES["script"])
    language = language_field(body, settings)
    script = script_field(body)
    location = location_field(body)
    try:
        signing.verify_script(settings.code_secret.reveal(), body.get("signature"), script, language, location,
                              body.get("expires"))
    except signing.SignatureError as error:
        raise Unauthorized(str(error)) from None
    spec = {"language": language, "script": script, "timeout": settings.default_timeout, "env": {}, "signed": True}
    return JobRequest("script", spec, location)


def parse_legacy_form(params: Mapping[str, Any], settings: Settings, *, authorized: bool) -> JobRequest:
    """The original `POST /` form: `payload` (a JSON string) with `api_token` or `signature`, optional `command`."""
    raw = params.get("payload")
    if not isinstance(raw, str) or not raw.strip():
        raise RequestError("payload", "is required: a JSON object as a string")
    try:
        payload = json.loads(raw)
    except ValueError as error:
        raise RequestError("payload", f"is not valid JSON: {error.msg} at position {error.pos}") from None
    if not isinstance(payload, dict):
        raise RequestError("payload", "must be a JSON object")
    command = params.get("command")
    if command is not None and not isinstance(command, str):
        raise RequestError("command", "must be a string")

    if "script_payload" in payload:
        fields = {
            "type": "script",
            "script": payload.get("script_payload"),
            "language": payload.get("language", settings.legacy_script_language),
            "results_location": payload.get("results_location"),
            "expires": payload.get("expires"),
            "signature": params.get("signature"),
        }
        if authorized:
            fields.pop("signature")
            fields.pop("expires")
            return parse_script({k: v for k, v in fields.items() if v is not None}, settings)
        signature = params.get("signature")
        if isinstance(signature, str) and not signature.startswith(signing.SIGNATURE_PREFIX):
            return _legacy_signed_script(fields, settings)
        return parse_signed_script(fields, settings)

    if not authorized:
        raise Unauthorized("an API token is required for project jobs")
    if "project" in payload and payload.get("project_request") is not None:
        return _parse_kind("project_request", {**payload, "type": "project_request"}, settings)
    if "project" in payload and (command is not None or payload.get("command") is not None):
        fields = {**payload, "type": "command"}
        if command is not None:
            fields["command"] = command
        return _parse_kind("command", fields, settings)
    return _parse_kind("github_push", {"type": "github_push", "push": payload}, settings)


def _parse_kind(job_type: str, body: Mapping[str, Any], settings: Settings) -> JobRequest:
    if job_type not in PARSERS:
        raise UnsupportedJobType(job_type)
    return PARSERS[job_type](body, settings)


def _legacy_signed_script(fields: Mapping[str, Any], settings: Settings) -> JobRequest:
    if not settings.accept_legacy_signatures:
        raise Unauthorized("legacy signatures are not accepted (accept_legacy_signatures = false)")
    if settings.code_secret is None:
        raise Unauthorized("signed scripts are disabled: no code_secret is configured")
    script = script_field(fields)
    try:
        signing.verify_legacy(settings.code_secret.reveal(), fields.get("signature"), script)
    except signing.SignatureError as error:
        raise Unauthorized(str(error)) from None
    spec = {"language": language_field(fields, settings), "script": script, "timeout": settings.default_timeout,
            "env": {}, "signed": True}
    return JobRequest("script", spec, location_field(fields))


def _refuse_unknown(body: Mapping[str, Any], known: Mapping[str, str]) -> None:
    unknown = sorted(set(body) - set(known) - {"type"})
    if unknown:
        raise RequestError(unknown[0], f"is not a field of this job type; fields: {', '.join(sorted(known))}")


def language_field(body: Mapping[str, Any], settings: Settings) -> str:
    language = body.get("language", "python")
    if not isinstance(language, str) or language not in settings.languages:
        available = ", ".join(sorted(settings.languages))
        raise RequestError("language", f"{language!r} is not available; available: {available}")
    return language


def script_field(body: Mapping[str, Any]) -> str:
    script = body.get("script")
    if not isinstance(script, str) or not script.strip():
        raise RequestError("script", "is required: the script's source as a non-empty string")
    if "\x00" in script:
        raise RequestError("script", "must not contain NUL characters")
    return script


def location_field(body: Mapping[str, Any]) -> str | None:
    location = body.get("results_location")
    if location is None:
        return None
    try:
        return validate_key(location, "results_location")
    except InvalidKey as error:
        raise RequestError("results_location", str(error).removeprefix("results_location ")) from None


def timeout_field(body: Mapping[str, Any], settings: Settings) -> float:
    timeout = body.get("timeout")
    if timeout is None:
        return settings.default_timeout
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout):
        raise RequestError("timeout", "must be a number of seconds")
    if not 0 < timeout <= settings.max_timeout:
        raise RequestError("timeout", f"must be more than 0 and at most {settings.max_timeout:g} seconds")
    return float(timeout)


def env_field(body: Mapping[str, Any]) -> dict[str, str]:
    env = body.get("env")
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise RequestError("env", "must be an object of NAME: value strings")
    if len(env) > MAX_ENV_ENTRIES:
        raise RequestError("env", f"at most {MAX_ENV_ENTRIES} variables")
    for name, value in env.items():
        if not _ENV_NAME.fullmatch(name):
            raise RequestError("env", f"{name!r} is not a valid variable name")
        if not isinstance(value, str) or "\x00" in value:
            raise RequestError("env", f"{name} must be a string without NUL characters")
    return dict(env)


MAX_UPLOAD_URLS = 200
MAX_URL_LENGTH = 8192


def upload_urls_field(body: Mapping[str, Any]) -> dict[str, Any]:
    """`{"result": url, "artifacts": {name: url}}`: where the box PUTs its result and named artifacts."""
    upload_urls = body.get("upload_urls")
    if upload_urls is None:
        return {}
    if not isinstance(upload_urls, Mapping):
        raise RequestError("upload_urls", 'must be an object: {"result": url, "artifacts": {name: url}}')
    unknown = sorted(set(upload_urls) - {"result", "artifacts"})
    if unknown:
        raise RequestError("upload_urls", f"{unknown[0]!r} is not a field; fields: artifacts, result")
    checked: dict[str, Any] = {}
    if upload_urls.get("result") is not None:
        checked["result"] = _upload_url(upload_urls["result"], "upload_urls.result")
    artifacts = upload_urls.get("artifacts")
    if artifacts is not None:
        if not isinstance(artifacts, Mapping):
            raise RequestError("upload_urls.artifacts", "must be an object of artifact name: URL")
        if len(artifacts) > MAX_UPLOAD_URLS:
            raise RequestError("upload_urls.artifacts", f"at most {MAX_UPLOAD_URLS} artifacts")
        checked["artifacts"] = {}
        for name, url in artifacts.items():
            try:
                validate_key(name, "artifact name")
            except InvalidKey as error:
                raise RequestError("upload_urls.artifacts", str(error)) from None
            checked["artifacts"][name] = _upload_url(url, f"upload_urls.artifacts.{name}")
    return checked


def _upload_url(url: Any, field: str) -> str:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or not urlsplit(url).netloc:
        raise RequestError(field, "must be an http or https URL")
    if len(url) > MAX_URL_LENGTH or any(ord(c) <= 32 or ord(c) == 127 for c in url):
        raise RequestError(field, f"must be a URL of at most {MAX_URL_LENGTH} characters without spaces")
    return url
