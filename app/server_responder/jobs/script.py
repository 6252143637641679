"""Script jobs: a script handed to its language's interpreter through a file."""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from pathlib import PurePath

from server_responder.files import write_file
from server_responder.jobs.executor import JobContext, JobOutcome
from server_responder.jobs.requests import SCRIPT_FIELDS, parse_script
from server_responder.jobs.types import JobType
from server_responder.results.artifacts import ArtifactLimits, store_artifacts

SCRIPT_SUFFIXES = {"python": ".py", "ruby": ".rb", "node": ".js", "bash": ".sh", "sh": ".sh"}
# A script file's language by its name's suffix, for clients that send a file (`submit --script job.sh`).
SUFFIX_LANGUAGES = {".py": "python", ".rb": "ruby", ".js": "node", ".mjs": "node", ".sh": "sh", ".bash": "bash"}


def language_of_file(name: str, configured: Iterable[str] = ()) -> str | None:
    """The language a script file's suffix names: from SUFFIX_LANGUAGES, else a configured language of that
    name (`job.lua` for a `lua` language); None when the suffix says nothing."""
    suffix = PurePath(name).suffix.lower()
    if suffix in SUFFIX_LANGUAGES:
        return SUFFIX_LANGUAGES[suffix]
    return suffix[1:] if suffix[1:] and suffix[1:] in set(configured) else None


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
