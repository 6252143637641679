"""Script jobs: a script handed to its language's interpreter through a file."""

from __future__ import annotations

import shlex

from server_responder.results.artifacts import store_artifacts
from server_responder.jobs.service import JobContext

SCRIPT_SUFFIXES = {"python": ".py", "ruby": ".rb", "node": ".js", "bash": ".sh", "sh": ".sh"}


class ScriptExecutor:
    def execute(self, context: JobContext) -> None:
        spec = context.job.spec
        language = spec["language"]
        interpreter = context.settings.languages[language]
        script_path = context.workspace / f"script{SCRIPT_SUFFIXES.get(language, '')}"
        script_path.write_text(spec["script"])
        script_path.chmod(0o640)
        argv = [*interpreter, script_path.name]
        outcome = context.run(argv)
        context.record(outcome, cmd_run=shlex.join([*interpreter, script_path.name]))
        context.job.artifacts = store_artifacts(context.workspace / "artifacts", context.job.results_location,
                                                context.store, context.settings.artifact_limit_bytes)
