"""Script jobs: a script handed to its language's interpreter through a file."""

from __future__ import annotations

import shlex

from server_responder.files import write_file
from server_responder.jobs.executor import JobContext, JobOutcome
from server_responder.jobs.requests import SCRIPT_FIELDS, parse_script
from server_responder.jobs.types import JobType
from server_responder.results.artifacts import ArtifactLimits, store_artifacts

SCRIPT_SUFFIXES = {"python": ".py", "ruby": ".rb", "node": ".js", "bash": ".sh", "sh": ".sh"}


class ScriptExecutor:
    def execute(self, context: JobContext) -> JobOutcome:
        language = context.spec["language"]
        interpreter = context.settings.languages[language]
        script_path = context.workspace / f"script{SCRIPT_SUFFIXES.get(language, '')}"
        write_file(script_path, context.spec["script"].encode(), 0o640)
        process = context.run([*interpreter, script_path.name])
        artifacts = store_artifacts(context.workspace, context.results_location, context.store,
                                    ArtifactLimits.of(context.settings))
        return JobOutcome.of_process(process, cmd_run=shlex.join([*interpreter, script_path.name]),
                                     artifacts=tuple(artifacts.stored), skipped_artifacts=tuple(artifacts.skipped))


def script_job_type() -> JobType:
    return JobType("script", SCRIPT_FIELDS, parse_script, ScriptExecutor(), signable=True)
