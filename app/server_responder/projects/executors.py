"""Project jobs: a command at one commit, a list of commits or a day-by-day history; GitHub pushes; requests
sent to a project's own web app. Each run gets a private checkout that is removed afterwards."""

from __future__ import annotations

import dataclasses
import http.client
import logging
import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server_responder.jobs.executor import JobContext, JobOutcome
from server_responder.jobs.record import job_status, utc_now
from server_responder.jobs.runner import JobUser, ProcessOutcome
from server_responder.jobs.types import JobType
from server_responder.projects import config as project_config
from server_responder.projects.config import ProjectConfig, ProjectConfigError
from server_responder.projects.git import HISTORY, Git, GitError, KeyedLocks, Mirrors
from server_responder.projects.requests import (
    COMMAND_FIELDS, GITHUB_PUSH_FIELDS, PROJECT_REQUEST_FIELDS, parse_command, parse_github_push,
    parse_project_request,
)
from server_responder.results.keys import commit_key, project_index_key
from server_responder.results.store import ResultStore, get_json, put_json
from server_responder.settings import Settings

log = logging.getLogger("server_responder.projects")

_PORT_POLL_SECONDS = 0.05


def project_job_types(settings: Settings) -> list[JobType]:
    """The project job types, their executors sharing one set of mirrors and index locks."""
    projects = Projects(settings)
    return [
        JobType("command", COMMAND_FIELDS, parse_command, CommandExecutor(projects)),
        JobType("github_push", GITHUB_PUSH_FIELDS, parse_github_push, GitHubPushExecutor(projects)),
        JobType("project_request", PROJECT_REQUEST_FIELDS, parse_project_request, ProjectRequestExecutor(projects)),
    ]


@dataclass
class Run:
    """One command run at one commit, as stored at the commit key."""

    commit: str
    sha: str
    outcome: ProcessOutcome | None = None
    cmd_run: str = ""
    error: str | None = None
    started_at: str = field(default_factory=utc_now)
    finished_at: str | None = None
    setup: dict[str, Any] | None = None

    @property
    def status(self) -> str:
        outcome = self.outcome
        # A run that went wrong before or around its command failed, however the command itself ended.
        ran = outcome is not None and self.error is None
        return job_status(exit_status=outcome.exit_status if outcome else None, error=self.error,
                          timed_out=ran and outcome.timed_out, cancelled=ran and outcome.cancelled)

    @property
    def results(self) -> str:
        if self.outcome is None:
            return self.error or ""
        output = self.outcome.output
        # As the original: an empty result still says what ran.
        return output or f"cmd {self.cmd_run} completed with no output"

    def document(self, job_id: str, project: str, **extra: Any) -> dict[str, Any]:
        outcome = self.outcome
        return {
            "job_id": job_id,
            "project": project,
            "commit": self.commit,
            "sha": self.sha,
            "status": self.status,
            "cmd_run": self.cmd_run,
            "exit_status": outcome.exit_status if outcome else None,
            "signal": outcome.signal if outcome else None,
            "results": self.results,
            "stdout": outcome.stdout if outcome else "",
            "stderr": outcome.stderr if outcome else "",
            "truncated": outcome.truncated if outcome else False,
            "timed_out": outcome.timed_out if outcome else False,
            "error": self.error,
            "setup": self.setup,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_s": outcome.duration_s if outcome else None,
            **extra,
        }


class ProjectFailure(Exception):
    """The job cannot go on; the message is the job's error, for the caller to read."""


class Projects:
    """What the project executors share: mirrors of every project and the index documents' locks."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.mirrors = Mirrors(settings.data_dir / "repos", settings.repo_base_url,
                               Git(Path.home(), settings.default_timeout))
        self._index_locks = KeyedLocks()

    def update(self, context: JobContext, project: str) -> Path:
        try:
            return self.mirrors.update(project, context.cancel)
        except GitError as error:
            raise ProjectFailure(str(error)) from None

    def resolve(self, mirror: Path, project: str, revision: str) -> str:
        sha = self.mirrors.resolve(mirror, revision)
        if sha is None:
            shown = "the default branch" if revision == "HEAD" else f"commit {revision!r}"
            raise ProjectFailure(f"{shown}: no such commit or ref in {project}")
        return sha

    def read_config(self, mirror: Path, sha: str) -> ProjectConfig:
        try:
            found = self.mirrors.read_file(mirror, sha, project_config.DEFERRED_SERVER_FILE)
            return project_config.parse_deferred_server(found.text, self.settings.max_timeout) if found \
                else ProjectConfig()
        except (GitError, ProjectConfigError) as error:
            raise ProjectFailure(str(error)) from None

    def checkout(self, context: JobContext, project: str, mirror: Path, sha: str) -> Path:
        """A fresh clone at `sha` in the job's workspace; the name is unguessable so nothing can stand in for it."""
        destination = context.workspace / f"checkout-{secrets.token_hex(8)}"
        with self.mirrors.lock(project):
            try:
                self.mirrors.checkout(mirror, sha, destination, context.run_as, context.cancel)
            except GitError as error:
                remove_tree(destination, context.run_as)
                raise ProjectFailure(f"could not check out {sha}: {error}") from None
        return destination

    def run_commands(self, context: JobContext, checkout: Path, run: Run, command: str, *,
                     setup: str | None = None, env: Mapping[str, str] | None = None,
                     timeout: float | None = None) -> None:
        """`setup` then `command`, each through /bin/sh -c in the checkout, with the job's limits and user."""
        job_env = {**checkout_environment(checkout, context.run_as), **(env or {})}
        if setup:
            outcome = context.run(["/bin/sh", "-c", setup], cwd=checkout, env=job_env, timeout=timeout)
            run.setup = {"cmd_run": setup, "exit_status": outcome.exit_status, "output": outcome.output,
                         "timed_out": outcome.timed_out}
            if outcome.exit_status != 0:
                run.cmd_run, run.outcome = setup, outcome
                run.error = "setup failed" if not outcome.timed_out else "setup timed out"
                return
        run.cmd_run = command
        run.outcome = context.run(["/bin/sh", "-c", command], cwd=checkout, env=job_env, timeout=timeout)

    def store_run(self, context: JobContext, project: str, run: Run, *, location: str | None = None,
                  push: Mapping[str, Any] | None = None, **extra: Any) -> str:
        """The run's document at its commit key (and `location`), and its line in the project index."""
        key = commit_key(project, run.sha)
        document = run.document(context.job_id, project, commit_key=key, project_key=project_index_key(project),
                                **extra)
        put_json(context.store, key, document)
        if location is not None:
            put_json(context.store, location, document)
        self.record_in_index(context.store, project, run.sha, push)
        return key

    def record_in_index(self, store: ResultStore, project: str, sha: str, push: Mapping[str, Any] | None) -> None:
        index_key = project_index_key(project)
        # Read-modify-write: concurrent jobs of one project take turns, so no commit is lost.
        with self._index_locks(project):
            index = get_json(store, index_key)
            if not isinstance(index, dict):
                index = {}
            index[sha] = {"uri": store.url(commit_key(project, sha)), "push": dict(push) if push else None}
            put_json(store, index_key, index)


class CommandExecutor:
    """`command` jobs: the command at one commit, at each commit of a list, or once a day over history."""

    def __init__(self, projects: Projects) -> None:
        self.projects = projects

    def execute(self, context: JobContext) -> JobOutcome:
        spec = context.spec
        project = spec["project"]
        details = {"project": project, "project_key": project_index_key(project), "commit": spec.get("commit")}
        context.report(**details)
        try:
            with self.projects.mirrors.lock(project):
                mirror = self.projects.update(context, project)
                targets = self._targets(mirror, project, spec["commits"])
        except ProjectFailure as error:
            return JobOutcome(error=str(error), details=details)
        if not targets:
            return JobOutcome(cmd_run=spec["command"], exit_status=0, details=details,
                              output=f"no commits on the default branch in the last "
                                     f"{self.projects.settings.history_days} days")
        locations = self._locations(spec.get("location_template"), spec.get("commit"), targets)
        context.will_write([commit_key(project, sha) for _, sha in targets] +
                           [location for location in locations if location is not None])
        try:
            runs = self._run_all(context, project, mirror, targets, locations)
        finally:
            context.will_write(())
        return self._summary(spec["command"], runs, details, single=len(targets) == 1)

    def _targets(self, mirror: Path, project: str, commits: list[str]) -> list[tuple[str, str]]:
        if commits == [HISTORY]:
            try:
                shas = self.projects.mirrors.history(mirror, self.projects.settings.history_days)
            except GitError as error:
                raise ProjectFailure(f"history of {project}: {error}") from None
            return [(sha, sha) for sha in shas]
        # Every commit is resolved before anything runs: one unknown ref fails the job up front.
        resolved = [(revision, self.projects.resolve(mirror, project, revision)) for revision in commits]
        # Two names for one commit run it once: a second run would only overwrite the first one's result.
        unique: dict[str, tuple[str, str]] = {}
        for revision, sha in resolved:
            unique.setdefault(sha, (revision, sha))
        return list(unique.values())

    @staticmethod
    def _locations(template: str | None, given: str | None, targets: list[tuple[str, str]]) -> list[str | None]:
        """Per-commit result locations, as the original: `_<list>_` in results_location becomes `_<sha>_`."""
        if template is None or given is None:
            return [None] * len(targets)
        return [template.replace(f"_{given}_", f"_{sha}_") for _, sha in targets]

    def _run_all(self, context: JobContext, project: str, mirror: Path, targets: list[tuple[str, str]],
                 locations: list[str | None]) -> list[tuple[Run, str]]:
        spec = context.spec
        runs = []
        for (given, sha), location in zip(targets, locations, strict=True):
            if context.cancel.is_set():
                break
            run = Run(commit=given, sha=sha, cmd_run=spec["command"])
            try:
                checkout = self.projects.checkout(context, project, mirror, sha)
            except ProjectFailure as error:
                run.error = str(error)
            else:
                try:
                    self.projects.run_commands(context, checkout, run, spec["command"], env=spec["env"])
                finally:
                    remove_tree(checkout, context.run_as)
            run.finished_at = utc_now()
            key = self.projects.store_run(context, project, run, location=location)
            runs.append((run, key))
        return runs

    @staticmethod
    def _summary(command: str, runs: list[tuple[Run, str]], details: dict[str, Any], *, single: bool) -> JobOutcome:
        details = {
            **details,
            "commit_keys": [key for _, key in runs],
            "commit_key": runs[-1][1] if runs else None,
            "runs": [{"commit": run.commit, "sha": run.sha, "commit_key": key, "status": run.status,
                      "exit_status": run.outcome.exit_status if run.outcome else None} for run, key in runs],
        }
        if single and runs:
            run = runs[0][0]
            details["sha"] = run.sha
            if run.outcome is None:
                return JobOutcome(cmd_run=command, error=run.error, details=details)
            return JobOutcome.of_process(run.outcome, cmd_run=run.cmd_run, output=run.results, error=run.error,
                                         details=details)
        outcomes = [run.outcome for run, _ in runs if run.outcome]
        failed = [run for run, _ in runs if run.status != "succeeded"]
        error = None
        exit_status: int | None = 0
        if failed:
            exit_status = failed[0].outcome.exit_status if failed[0].outcome else None
            error = f"{len(failed)} of {len(runs)} commits did not succeed: " + \
                ", ".join(run.sha[:12] for run in failed)
        return JobOutcome(
            cmd_run=command, exit_status=exit_status, error=error, details=details,
            output="".join(f"== {run.sha} ({run.status})\n{run.results.rstrip()}\n" for run, _ in runs),
            stdout="".join(outcome.stdout for outcome in outcomes),
            stderr="".join(outcome.stderr for outcome in outcomes),
            truncated=any(outcome.truncated for outcome in outcomes),
        )


class GitHubPushExecutor:
    """`github_push` jobs: the command from `.deferred_server` at the pushed commit, else default_command."""

    def __init__(self, projects: Projects) -> None:
        self.projects = projects

    def execute(self, context: JobContext) -> JobOutcome:
        spec = context.spec
        project, sha = spec["project"], spec["sha"]
        key = commit_key(project, sha)
        details = {"project": project, "project_key": project_index_key(project), "commit": sha, "sha": sha,
                   "ref": spec.get("ref"), "commit_key": key, "commit_keys": [key]}
        context.report(**details)
        context.will_write([key])
        try:
            with self.projects.mirrors.lock(project):
                mirror = self.projects.update(context, project)
                self.projects.resolve(mirror, project, sha)
                config = self.projects.read_config(mirror, sha)
            checkout = self.projects.checkout(context, project, mirror, sha)
        except ProjectFailure as error:
            context.will_write(())
            # Whoever watches the commit key learns why nothing ran.
            failed = Run(commit=sha, sha=sha, error=str(error), finished_at=utc_now())
            self.projects.store_run(context, project, failed, push=spec.get("push"), ref=spec.get("ref"))
            return JobOutcome(error=str(error), details=details)
        command = config.command or self.projects.settings.default_command
        run = Run(commit=sha, sha=sha, cmd_run=command)
        try:
            self.projects.run_commands(context, checkout, run, command, setup=config.setup, env=config.env,
                                       timeout=config.timeout or self.projects.settings.default_timeout)
        finally:
            remove_tree(checkout, context.run_as)
            context.will_write(())
        run.finished_at = utc_now()
        self.projects.store_run(context, project, run, push=spec.get("push"), ref=spec.get("ref"))
        details["setup"] = run.setup
        if run.outcome is None:
            return JobOutcome(error=run.error, details=details)
        return JobOutcome.of_process(run.outcome, cmd_run=run.cmd_run, output=run.results, error=run.error,
                                     details=details)


class ProjectRequestExecutor:
    """`project_request` jobs: boot the project's web process on a free port, send it one request, stop it."""

    def __init__(self, projects: Projects) -> None:
        self.projects = projects

    def execute(self, context: JobContext) -> JobOutcome:
        spec = context.spec
        project = spec["project"]
        details: dict[str, Any] = {"project": project, "project_key": project_index_key(project),
                                   "commit": spec["commits"][0]}
        context.report(**details)
        try:
            with self.projects.mirrors.lock(project):
                mirror = self.projects.update(context, project)
                sha = self.projects.resolve(mirror, project, spec["commits"][0])
                config = self.projects.read_config(mirror, sha)
                web = config.web or self._procfile_web(mirror, sha)
            details["sha"] = sha
            context.report(sha=sha)
            checkout = self.projects.checkout(context, project, mirror, sha)
        except ProjectFailure as error:
            return JobOutcome(error=str(error), details=details)
        try:
            env = {**checkout_environment(checkout, context.run_as), **config.env, **spec["env"]}
            if config.setup:
                outcome = context.run(["/bin/sh", "-c", config.setup], cwd=checkout, env=env)
                details["setup"] = {"cmd_run": config.setup, "exit_status": outcome.exit_status,
                                    "output": outcome.output, "timed_out": outcome.timed_out}
                if outcome.exit_status != 0:
                    return JobOutcome.of_process(outcome, cmd_run=config.setup, error="setup failed",
                                                 details=details)
            web_process = WebProcess(context, checkout, web, env, self.projects.settings.boot_timeout)
            return web_process.serve_one_request(details)
        finally:
            remove_tree(checkout, context.run_as)

    def _procfile_web(self, mirror: Path, sha: str) -> str:
        try:
            found = self.projects.mirrors.read_file(mirror, sha, project_config.PROCFILE)
        except GitError as error:
            raise ProjectFailure(str(error)) from None
        web = project_config.procfile_web(found.text) if found else None
        if not web:
            raise ProjectFailure("no web process: add a Procfile with a `web:` line, or `web` in .deferred_server")
        return web


class WebProcess:
    """The project's web process in its own process group, alive only while one request is sent to it."""

    def __init__(self, context: JobContext, checkout: Path, command: str, env: Mapping[str, str],
                 boot_timeout: float) -> None:
        self.context = context
        self.checkout = checkout
        self.command = command
        self.env = dict(env)
        self.boot_timeout = boot_timeout
        self.port = free_port()
        self._stop = threading.Event()
        self._outcome: ProcessOutcome | None = None

    def serve_one_request(self, details: dict[str, Any]) -> JobOutcome:
        context, spec = self.context, self.context.spec
        request_timeout = float(spec["timeout"])
        # The process lives until it is stopped; its own limit only guards against a stop that never comes.
        lifetime = self.boot_timeout + request_timeout + context.settings.kill_grace_seconds + 30
        process_context = dataclasses.replace(context, cancel=self._stop)
        thread = threading.Thread(target=self._run, args=(process_context, lifetime), daemon=True,
                                  name=f"web-{context.job_id[:8]}")
        request = {"method": spec["method"], "path": spec["path"], "port": self.port}
        details = {**details, "request": request}
        context.report(request=request)
        thread.start()
        threading.Thread(target=self._stop_when_cancelled, daemon=True,
                         name=f"web-cancel-{context.job_id[:8]}").start()
        try:
            boot = self._wait_for_port(thread)
            response = self._send(request_timeout) if boot == "listening" else None
        finally:
            self._stop.set()
            thread.join()
        outcome = self._outcome
        ran: dict[str, Any] = {"cmd_run": self.command, "details": details}
        if outcome is not None:
            ran.update(stdout=outcome.stdout, stderr=outcome.stderr, truncated=outcome.truncated)
        if boot == "cancelled":
            return JobOutcome(**ran)
        # A failed boot or request is the app's own story: its output is the job's result.
        app_output = outcome.output if outcome else ""
        if boot == "exited" and outcome is not None:
            return JobOutcome(**ran, output=app_output, exit_status=outcome.exit_status, signal=outcome.signal,
                              error=f"the web process exited ({outcome.signal or f'status {outcome.exit_status}'}) "
                                    f"before accepting connections on port {self.port}")
        if boot != "listening":
            return JobOutcome(**ran, output=app_output,
                              error=f"the web process did not accept connections on port {self.port} "
                                    f"within boot_timeout ({self.boot_timeout:g} s)")
        if isinstance(response, str):
            return JobOutcome(**ran, output=app_output, error=response)
        ran["truncated"] = ran.get("truncated", False) or response["truncated"]
        ran["details"] = {**details, "response": response}
        return JobOutcome(**ran, output=response["body"], exit_status=0)

    def _stop_when_cancelled(self) -> None:
        # Stopping the app also ends a request in flight, so a cancelled job does not wait for its timeout.
        while not self._stop.wait(_PORT_POLL_SECONDS):
            if self.context.cancel.is_set():
                self._stop.set()

    def _run(self, process_context: JobContext, lifetime: float) -> None:
        env = {**self.env, "PORT": str(self.port)}
        self._outcome = process_context.run(["/bin/sh", "-c", self.command], cwd=self.checkout, env=env,
                                            timeout=lifetime)

    def _wait_for_port(self, thread: threading.Thread) -> str:
        """`listening`, `exited`, `cancelled` or `timed_out`, whichever happens first."""
        deadline = time.monotonic() + self.boot_timeout
        while time.monotonic() < deadline:
            if self.context.cancel.is_set():
                return "cancelled"
            if not thread.is_alive():
                return "exited"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return "listening"
            except OSError:
                pass
            # Polling, not sleeping a fixed boot time: the request goes as soon as the port answers.
            self.context.cancel.wait(_PORT_POLL_SECONDS)
        return "timed_out"

    def _send(self, timeout: float) -> dict[str, Any] | str:
        spec = self.context.spec
        limit = self.context.settings.output_limit_bytes
        method = spec["method"]
        headers = {"Host": f"localhost:{self.port}", "User-Agent": "server-responder"}
        body = None
        if spec["body"] or method in ("POST", "PUT", "PATCH"):
            body = spec["body"].encode()
            headers["Content-Type"] = spec["content_type"]
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, spec["path"], body=body, headers=headers)
            answer = connection.getresponse()
            data = answer.read(limit + 1)
        except (OSError, http.client.HTTPException) as error:
            return f"the request to the web process failed: {type(error).__name__}: {error}"
        finally:
            connection.close()
        received: dict[str, str] = {}
        for name, value in answer.getheaders():
            received[name] = f"{received[name]}, {value}" if name in received else value
        return {"status": answer.status, "reason": answer.reason, "headers": received,
                "body": data[:limit].decode("utf-8", errors="replace"), "truncated": len(data) > limit}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def checkout_environment(checkout: Path, run_as: JobUser | None) -> dict[str, str]:
    """Lets git in a job user's command accept a checkout the service made (git refuses other owners' repos)."""
    if run_as is None:
        return {}
    return {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "safe.directory", "GIT_CONFIG_VALUE_0": str(checkout)}


def remove_tree(path: Path, run_as: JobUser | None) -> None:
    if not path.exists() and not path.is_symlink():
        return
    if run_as:
        # The job may have made files only its own user can remove.
        subprocess.run(run_as.wrap(["rm", "-rf", "--", str(path)]), stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
                       env={"PATH": "/usr/bin:/bin"})
    shutil.rmtree(path, ignore_errors=True)
