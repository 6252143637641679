"""The executor interface: what a job type's executor is given, and the outcome it hands back."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from server_responder.jobs.containment import JobCell
from server_responder.jobs.output import LiveOutput
from server_responder.jobs.runner import JobUser, ProcessOutcome, job_environment, run_process
from server_responder.results.store import ResultStore
from server_responder.settings import Settings


@dataclass(frozen=True)
class JobOutcome:
    """What running a job came to; the job service turns it into the job's record and status."""

    exit_status: int | None = None
    signal: str | None = None
    cmd_run: str | None = None
    stdout: str = ""
    stderr: str = ""
    output: str = ""
    truncated: bool = False
    timed_out: bool = False
    artifacts: tuple[dict[str, Any], ...] = ()
    skipped_artifacts: tuple[dict[str, str], ...] = ()
    error: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of_process(cls, process: ProcessOutcome, cmd_run: str, **more: Any) -> JobOutcome:
        ran = {"exit_status": process.exit_status, "signal": process.signal, "cmd_run": cmd_run,
               "stdout": process.stdout, "stderr": process.stderr, "output": process.output,
               "truncated": process.truncated, "timed_out": process.timed_out}
        # A run whose end is not the job's own says so first; the executor's own reason follows.
        reasons = [reason for reason in (process.error, more.pop("error", None)) if reason]
        return cls(**{**ran, **more, "error": "; ".join(reasons) or None})


@dataclass(frozen=True)
class JobContext:
    """What an executor may use to run one job; `report` and `will_write` tell the job service, which records them."""

    job_id: str
    spec: Mapping[str, Any]
    results_location: str
    settings: Settings
    store: ResultStore
    workspace: Path
    cancel: threading.Event
    run_as: JobUser | None
    report: Callable[..., None] = lambda **details: None
    will_write: Callable[[Iterable[str]], None] = lambda keys: None
    cell: JobCell | None = None
    output: LiveOutput | None = None  # where its processes' output goes as it arrives, for live readers

    def run(self, argv: Sequence[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None,
            timeout: float | None = None) -> ProcessOutcome:
        """Run a process of this job with the job's limits, user and environment, in the job's cgroup (or tree)."""
        return run_process(
            argv,
            cwd=cwd or self.workspace,
            env=job_environment(self.workspace, env if env is not None else self.spec.get("env")),
            timeout=timeout if timeout is not None else self.spec.get("timeout", self.settings.default_timeout),
            output_limit=self.settings.output_limit_bytes,
            kill_grace=self.settings.kill_grace_seconds,
            run_as=self.run_as,
            cancel=self.cancel,
            cell=self.cell,
            on_output=self.output.publish if self.output is not None else None,
        )


class Executor(Protocol):
    def execute(self, context: JobContext) -> JobOutcome:
        """Run the job and say how it went; raise only for the service's own faults."""
