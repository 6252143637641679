"""The job-type table: each job type's request fields, parser and executor, built by the composition root."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from server_responder.jobs.executor import Executor
from server_responder.settings import Settings


class RequestError(ValueError):
    """A field is missing or wrong: `field` names it, the message says what is expected."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


class Unauthorized(PermissionError):
    """Neither a valid token nor a valid signature."""


class NoCredentials(Unauthorized):
    """Neither a token that matches nor a signature was sent."""


class UnsupportedJobType(LookupError):
    """A job type this responder knows of but cannot run."""


@dataclass(frozen=True)
class JobRequest:
    type: str
    spec: dict[str, Any]
    results_location: str | None


Parser = Callable[[Mapping[str, Any], Settings], JobRequest]


@dataclass(frozen=True)
class RequestField:
    """One field of a job request: its JSON Schema, whether it must be given, and what it means."""

    name: str
    schema: Mapping[str, Any]
    description: str
    required: bool = False


@dataclass(frozen=True)
class JobType:
    name: str
    fields: tuple[RequestField, ...]
    parse: Parser | None
    executor: Executor | None
    # Whether a caller without the token may run it with a signature (only scripts).
    signable: bool = False

    @property
    def supported(self) -> bool:
        return self.parse is not None and self.executor is not None

    def field_names(self) -> list[str]:
        return [request_field.name for request_field in self.fields]


@dataclass(frozen=True)
class JobTypes:
    """Every job type this responder knows, by name; parsing, `/index`, OpenAPI and the job service read it."""

    entries: tuple[JobType, ...] = field(default=())

    @classmethod
    def of(cls, entries: Iterable[JobType]) -> JobTypes:
        return cls(tuple(sorted(entries, key=lambda entry: entry.name)))

    def __iter__(self) -> Iterator[JobType]:
        return iter(self.entries)

    def __contains__(self, name: object) -> bool:
        return any(entry.name == name for entry in self.entries)

    def get(self, name: str) -> JobType | None:
        return next((entry for entry in self.entries if entry.name == name), None)

    def names(self) -> list[str]:
        return [entry.name for entry in self.entries]

    def executor(self, name: str) -> Executor | None:
        entry = self.get(name)
        return entry.executor if entry is not None else None

    def parse(self, name: str, body: Mapping[str, Any], settings: Settings) -> JobRequest:
        entry = self.get(name)
        if entry is None or not entry.supported:
            raise UnsupportedJobType(name)
        return entry.parse(body, settings)

    def index(self) -> list[dict[str, Any]]:
        """The `GET /index` document: each type with its fields' descriptions."""
        return [{"type": entry.name, "fields": {f.name: f.description for f in entry.fields}} for entry in self]


def refuse_unknown(body: Mapping[str, Any], fields: Iterable[RequestField]) -> None:
    known = sorted(request_field.name for request_field in fields)
    unknown = sorted(set(body) - set(known) - {"type"})
    if unknown:
        raise RequestError(unknown[0], f"is not a field of this job type; fields: {', '.join(known)}")
