"""Turning what a caller sent into a validated job: every field checked, every mistake named."""

from __future__ import annotations

import math
import os
import re
import shutil
from collections.abc import Mapping
from typing import Any

from server_responder import safe_json, signing
from server_responder.http_client import InvalidDestination, checked_destination
from server_responder.jobs.runner import SAFE_PATH
from server_responder.jobs.types import (
    JobRequest, JobTypes, NoCredentials, RequestError, RequestField, Unauthorized, refuse_unknown,
)
from server_responder.results.keys import InvalidKey, validate_key
from server_responder.settings import Settings

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,255}")
MAX_ENV_ENTRIES = 100
# The kernel refuses an environment string over 128 KiB and bounds all of argv and the environment together.
MAX_ENV_ENTRY_BYTES = 32 * 1024
MAX_ENV_BYTES = 128 * 1024
# A key's segments are file names in the local store, where a name has at most 255 bytes; the store adds up to
# this much to the last segment (`_artifact_files` and its `@data` file).
MAX_LOCATION_SEGMENT = 255 - len("_artifact_files@data")


_STRING = {"type": "string"}
SCRIPT_FIELDS = (
    RequestField("script", _STRING, "the script's source (required)", required=True),
    RequestField("language", {"type": "string", "default": "python"},
                 "an interpreter name from `languages` (default python)"),
    RequestField("results_location", {"type": "string", "pattern": "^[A-Za-z0-9._/-]{1,512}$"},
                 "store key for the result document (default results/<job id>)"),
    RequestField("timeout", {"type": "number", "exclusiveMinimum": 0},
                 "seconds before the job is killed (default default_timeout, at most max_timeout)"),
    RequestField("env", {"type": "object", "additionalProperties": {"type": "string"}},
                 "extra environment variables for the job (token only)"),
    RequestField("upload_urls", {"type": "object", "properties": {
                     "result": {"type": "string", "format": "uri"},
                     "artifacts": {"type": "object", "additionalProperties": {"type": "string", "format": "uri"}}},
                     "additionalProperties": False},
                 "presigned PUT URLs the result and artifacts are also written to: "
                 "{\"result\": url, \"artifacts\": {name: url}} (token only; see `server-responder presign`)"),
    RequestField("signature", _STRING, "v1 signature instead of a token (see `server-responder sign`)"),
    RequestField("expires", {"type": ["integer", "null"]}, "Unix time the signature expires, as signed"),
)


def parse_job_request(body: Any, settings: Settings, types: JobTypes, *, authorized: bool) -> JobRequest:
    """Validate a JSON job request; `authorized` is whether the caller presented the API token."""
    if not isinstance(body, Mapping):
        raise RequestError("body", "must be a JSON object")
    job_type = body.get("type", "script")
    if not isinstance(job_type, str):
        raise RequestError("type", "must be a string")
    if not authorized:
        if body.get("signature") is None:
            raise NoCredentials("an API token or a signature is required")
        entry = types.get(job_type)
        if entry is None or not entry.signable:
            raise Unauthorized("only script jobs may be signed; other job types need the API token")
        return parse_signed_script(body, settings)
    if job_type not in types:
        raise RequestError("type", f"unknown job type {job_type!r}; one of {', '.join(types.names())}")
    return types.parse(job_type, body, settings)


def parse_script(body: Mapping[str, Any], settings: Settings) -> JobRequest:
    refuse_unknown(body, SCRIPT_FIELDS)
    spec = {
        "language": language_field(body, settings),
        "script": script_field(body),
        "timeout": timeout_field(body, settings),
        "env": env_field(body),
    }
    upload_urls = upload_urls_field(body, settings)
    if upload_urls:
        spec["upload_urls"] = upload_urls
    return JobRequest("script", spec, location_field(body))



def parse_signed_script(body: Mapping[str, Any], settings: Settings) -> JobRequest:
    """A script a public page may run: exactly as signed, with the default limits and no env."""
    if settings.code_secret is None:
        raise Unauthorized("signed scripts are disabled: no code_secret is configured")
    for field in ("env", "timeout", "upload_urls"):
        if body.get(field) is not None:
            raise RequestError(field, "is not allowed on a signed script; it needs the API token")
    refuse_unknown(body, SCRIPT_FIELDS)
    language = language_field(body, settings)
    script = script_field(body)
    location = location_field(body)
    try:
        signing.verify_script(settings.code_secret.reveal(), body.get("signature"), script, language, location,
                              body.get("expires"), max_age=settings.signature_max_age_seconds)
    except signing.SignatureError as error:
        raise Unauthorized(str(error)) from None
    spec = {"language": language, "script": script, "timeout": settings.default_timeout, "env": {}, "signed": True}
    return JobRequest("script", spec, location)


def parse_legacy_form(params: Mapping[str, Any], settings: Settings, types: JobTypes, *,
                      authorized: bool) -> JobRequest:
    """The original `POST /` form: `payload` (a JSON string) with `api_token` or `signature`, optional `command`."""
    raw = params.get("payload")
    if not isinstance(raw, str) or not raw.strip():
        raise RequestError("payload", "is required: a JSON object as a string")
    try:
        payload = safe_json.loads(raw)
    except safe_json.UnsafeJson as error:
        raise RequestError("payload", f"is not acceptable JSON: {error}") from None
    if not isinstance(payload, dict):
        raise RequestError("payload", "must be a JSON object")
    command = params.get("command")
    if command is not None and not isinstance(command, str):
        raise RequestError("command", "must be a string")

    if "script_payload" in payload:
        if "language" not in payload:
            _check_legacy_language(settings)
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

    if "script" in payload:
        raise RequestError("payload.script", "a script is sent as payload.script_payload (its language in "
                                             f"payload.language, default {settings.legacy_script_language}); "
                                             "or POST /jobs with {\"script\": ...}")
    if not authorized:
        raise Unauthorized("an API token is required for project jobs")
    if "project" in payload and payload.get("project_request") is not None:
        return types.parse("project_request", {**payload, "type": "project_request"}, settings)
    if "project" in payload and (command is not None or payload.get("command") is not None):
        fields = {**payload, "type": "command"}
        if command is not None:
            fields["command"] = command
        return types.parse("command", fields, settings)
    return types.parse("github_push", {"type": "github_push", "push": payload}, settings)


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


def _check_legacy_language(settings: Settings) -> None:
    language = settings.legacy_script_language
    problem = language_problem(language, settings)
    if problem is not None:
        raise RequestError("payload.language", f"a script without payload.language runs as "
                                               f"legacy_script_language ({language}), and {problem}; send "
                                               "payload.language or set legacy_script_language")


def language_field(body: Mapping[str, Any], settings: Settings) -> str:
    language = body.get("language", "python")
    problem = language_problem(language, settings)
    if problem is not None:
        raise RequestError("language", problem)
    return language


def language_problem(language: Any, settings: Settings) -> str | None:
    """Why a script of this language can't run here, or None: not configured, or its interpreter is missing."""
    if isinstance(language, str) and language in settings.languages:
        interpreter = settings.languages[language][0]
        if interpreter_installed(interpreter):
            return None  # the usual case: only its own interpreter looked up
        return (f"{language}'s interpreter {interpreter} is not installed on this responder (install it, or "
                f"use one of: {_usable_languages(settings)})")
    return f"{language!r} is not available; available: {_usable_languages(settings)}"


def _usable_languages(settings: Settings) -> str:
    usable = sorted(name for name, argv in settings.languages.items() if interpreter_installed(argv[0]))
    return ", ".join(usable) or "none"


def interpreter_installed(name: str) -> bool:
    """Whether a job could start this interpreter: looked up in the jobs' own PATH."""
    if "/" in name:
        return os.path.isfile(name) and os.access(name, os.X_OK)
    return shutil.which(name, path=SAFE_PATH) is not None


def script_field(body: Mapping[str, Any]) -> str:
    script = body.get("script")
    if not isinstance(script, str) or not script.strip():
        raise RequestError("script", "is required: the script's source as a non-empty string")
    check_text("script", script)
    return script


def check_text(field: str, text: str) -> None:
    """Text that is handed to a process or written to a file: no NUL, and it must encode to UTF-8."""
    if "\x00" in text:
        raise RequestError(field, "must not contain NUL characters")
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            raise RequestError(field, "must be valid Unicode text (no lone UTF-16 surrogates)") from None


def location_field(body: Mapping[str, Any]) -> str | None:
    location = body.get("results_location")
    if location is None:
        return None
    try:
        validate_key(location, "results_location")
    except InvalidKey as error:
        raise RequestError("results_location", str(error).removeprefix("results_location ")) from None
    longest = max(location.split("/"), key=len)
    if len(longest) > MAX_LOCATION_SEGMENT:
        raise RequestError("results_location", f"a path segment of {len(longest)} characters is longer than "
                                               f"{MAX_LOCATION_SEGMENT}")
    return location


def timeout_field(body: Mapping[str, Any], settings: Settings) -> float:
    timeout = body.get("timeout")
    if timeout is None:
        return settings.default_timeout
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise RequestError("timeout", "must be a number of seconds")
    # Compared before any conversion: an integer too large for a float is simply out of range.
    if not 0 < timeout <= settings.max_timeout or not math.isfinite(timeout):
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
    total = 0
    for name, value in env.items():
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            shown = name[:64] if isinstance(name, str) else name
            raise RequestError("env", f"{shown!r} is not a valid variable name (letters, digits, _; at most 256)")
        if not isinstance(value, str):
            raise RequestError("env", f"{name} must be a string")
        check_text(f"env.{name}", value)
        size = len(name) + 1 + len(value.encode())
        if size > MAX_ENV_ENTRY_BYTES:
            raise RequestError("env", f"{name} is {size} bytes; at most {MAX_ENV_ENTRY_BYTES} for one variable")
        total += size + 1
    if total > MAX_ENV_BYTES:
        raise RequestError("env", f"{total} bytes in all; at most {MAX_ENV_BYTES}")
    return dict(env)


MAX_UPLOAD_URLS = 200
MAX_URL_LENGTH = 8192


def upload_urls_field(body: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
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
        checked["result"] = _upload_url(upload_urls["result"], "upload_urls.result", settings)
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
            checked["artifacts"][name] = _upload_url(url, f"upload_urls.artifacts.{name}", settings)
    return checked


def _upload_url(url: Any, field: str, settings: Settings) -> str:
    try:
        return checked_destination(url, max_length=MAX_URL_LENGTH, refused_networks=settings.refused_networks)
    except InvalidDestination as error:
        raise RequestError(field, str(error)) from None
