"""The result key layout shared by every store, and the validation of caller-given keys."""

from __future__ import annotations

import re

MAX_KEY_LENGTH = 512
_KEY_CHARACTERS = re.compile(r"[A-Za-z0-9._/-]+")


class InvalidKey(ValueError):
    """A caller-given key that could escape the store or is not in the key alphabet."""


def validate_key(key: object, field: str = "results_location") -> str:
    """Return `key` if it is a safe relative key, else raise InvalidKey naming the field."""
    if not isinstance(key, str) or not key:
        raise InvalidKey(f"{field} must be a non-empty string")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(f"{field} is longer than {MAX_KEY_LENGTH} characters")
    if not _KEY_CHARACTERS.fullmatch(key):
        raise InvalidKey(f"{field} may contain only letters, digits and . _ / -")
    if key.startswith("/"):
        raise InvalidKey(f"{field} must be relative (no leading /)")
    segments = key.split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        raise InvalidKey(f"{field} must not contain empty, . or .. segments")
    return key


def default_location(job_id: str) -> str:
    return f"results/{job_id}"


def artifact_key(location: str, name: str) -> str:
    return f"{location}_artifact_files_{name}"


def is_artifact_key(key: str) -> bool:
    """Whether a key names an artifact (a job's file, kept as its bytes) rather than a document of the service."""
    return "_artifact_files_" in key


def artifact_index_key(location: str) -> str:
    return f"{location}_artifact_files"


def commit_key(project: str, sha: str) -> str:
    return f"{project}/{sha}"


def project_index_key(project: str) -> str:
    return project
