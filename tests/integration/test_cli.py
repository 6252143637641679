"""The command-line client against a real responder."""

import json
import os
import re
import subprocess
import sys
import time

from server_responder.cli import COMMANDS
from server_responder.results.local import LocalResultStore
from server_responder.signing import verify_script


def cli(*args, env, stdin=""):
    return subprocess.run([sys.executable, "-m", "server_responder", *args], input=stdin, env=env,
                          capture_output=True, text=True, timeout=60)


def test_submit_prints_the_streams_and_exits_with_the_job_status(responder, tmp_path):
    script = tmp_path / "job.py"
    script.write_text("import sys\nprint('to stdout')\nprint('to stderr', file=sys.stderr)\nsys.exit(4)")
    token_file = tmp_path / "token"
    token_file.write_text(responder.token)
    done = cli("submit", "--url", responder.url, "--token-file", str(token_file), "--script", str(script),
               env=responder.env)
    assert done.returncode == 4
    assert done.stdout == "to stdout\n"
    assert "to stderr" in done.stderr
    # The job's own stderr first, then how it ended.
    assert done.stderr.splitlines()[-1].endswith(" failed (exit status 4)"), done.stderr


def test_submit_says_on_stderr_how_a_job_that_did_not_succeed_ended(responder):
    done = cli("submit", "--url", responder.url, "--script", "-", "--timeout", "1", env=responder.env,
               stdin="import time\nprint('started', flush=True)\ntime.sleep(60)")
    assert done.returncode != 0
    assert done.stdout == "started\n"
    assert "server-responder submit: job " in done.stderr and " timed out" in done.stderr, done.stderr
    succeeded = cli("submit", "--url", responder.url, "--script", "-", env=responder.env, stdin="print(1)")
    assert succeeded.returncode == 0 and succeeded.stderr == ""


def test_submit_takes_the_language_from_the_file_suffix_unless_told(responder, tmp_path):
    shell = tmp_path / "job.sh"
    shell.write_text("echo $((5 + 4)) ${BASH_VERSION:+from bash}\n")
    done = cli("submit", "--url", responder.url, "--script", str(shell), env=responder.env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "9\n"
    ruby = tmp_path / "job.rb"
    ruby.write_text("puts 5 + 4\n")
    done = cli("submit", "--url", responder.url, "--script", str(ruby), env=responder.env)
    assert (done.returncode, done.stdout) == (0, "9\n"), done.stderr
    # An explicit --language wins over the suffix.
    told = cli("submit", "--url", responder.url, "--script", str(shell), "--language", "bash", env=responder.env)
    assert told.returncode == 0, told.stderr
    assert told.stdout == "9 from bash\n"


def test_submit_reads_stdin_and_the_local_token(responder):
    done = cli("submit", "--url", responder.url, "--script", "-", "--language", "bash", env=responder.env,
               stdin="echo from bash")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "from bash\n"


def test_submit_reports_a_refused_job(responder):
    done = cli("submit", "--url", responder.url, "--script", "-", "--language", "cobol", env=responder.env,
               stdin="x")
    assert done.returncode == 2
    assert "language" in done.stderr


def test_sign_makes_fields_the_responder_accepts(make_responder, tmp_path):
    responder = make_responder(code_secret="cli-secret")
    script = tmp_path / "nine.py"
    script.write_text("print(5 + 4)")
    done = cli("sign", "--script", str(script), "--results-location", "examples/nine", "--expires-in", "120",
               env=responder.env)
    assert done.returncode == 0, done.stderr
    fields = json.loads(done.stdout)
    verify_script("cli-secret", fields["signature"], "print(5 + 4)", "python", "examples/nine", fields["expires"])
    answer = responder.request("POST", "/jobs?wait=20", body=fields, token=False)
    assert answer.status == 200 and answer.json()["stdout"] == "9\n"


def test_sign_refuses_a_bad_location_and_a_missing_secret(responder, tmp_path):
    script = tmp_path / "s.py"
    script.write_text("print(1)")
    assert cli("sign", "--script", str(script), env=responder.env).returncode == 2
    env = {**responder.env, "SERVER_RESPONDER_CODE_SECRET": "x"}
    refused = cli("sign", "--script", str(script), "--results-location", "../up", env=env)
    assert refused.returncode == 2 and "results_location" in refused.stderr


def test_every_command_has_help_that_names_no_module(responder):
    texts = [cli("--help", env=responder.env)]
    texts += [cli(command.name, "--help", env=responder.env) for command in COMMANDS]
    assert len(texts) > 8
    for text in texts:
        assert text.returncode == 0, text.stderr
        assert not re.search(r"server_responder|cli_\w+|\w\.py\b|`", text.stdout), text.stdout


def test_config_says_a_generated_token_is_in_use_without_showing_it(responder):
    shown = cli("config", env=responder.env)
    assert shown.returncode == 0, shown.stderr
    token_file = responder.data_dir / "api_token"
    assert json.loads(shown.stdout)["api_key"] == f"<generated, in {token_file}>"
    assert responder.token not in shown.stdout
    given = cli("config", env={**responder.env, "SERVER_RESPONDER_API_KEY": "a-token-from-the-environment"})
    assert json.loads(given.stdout)["api_key"] == "<set>"
    fresh = cli("config", env={**responder.env, "SERVER_RESPONDER_DATA_DIR": str(responder.data_dir / "fresh")})
    assert "generated into" in json.loads(fresh.stdout)["api_key"]


def local_env(tmp_path) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SERVER_RESPONDER_")}
    env["SERVER_RESPONDER_DATA_DIR"] = str(tmp_path / "data")
    return env


def test_cat_prints_an_artifact_as_its_bytes_and_a_document_pretty(tmp_path):
    store = LocalResultStore(tmp_path / "results")
    artifact = b'{"b":2,"a":[1,2]}'
    store.put("reports/x_artifact_files_data.json", artifact, "application/json")
    store.put("reports/x", b'{"results":"9\\n","exit_status":0}', "application/json")
    env = local_env(tmp_path)
    shown = subprocess.run([sys.executable, "-m", "server_responder", "cat", "reports/x_artifact_files_data.json",
                            "--store", str(tmp_path / "results")], env=env, capture_output=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == artifact
    document = cli("cat", "reports/x", "--store", str(tmp_path / "results"), env=env)
    assert document.stdout.startswith("{\n  ") and json.loads(document.stdout)["exit_status"] == 0


def closed_pipe_run(*args, env) -> subprocess.CompletedProcess:
    """The command with its stdout a pipe whose reader has already gone, as in `... | head` once head exits."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        return subprocess.run([sys.executable, "-m", "server_responder", *args], env=env, stdout=writer,
                              stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(writer)


def test_a_reader_that_goes_away_is_no_error_and_prune_still_prunes(tmp_path):
    store = LocalResultStore(tmp_path / "results")
    keys = [f"results/{n:04d}-" + "x" * 60 for n in range(400)]
    for key in keys:
        store.put(key, b"{}", "application/json")
    long_ago = time.time() - 11 * 86400
    for key in keys:
        os.utime(tmp_path / "results" / f"{key}@data", (long_ago, long_ago))
    env = local_env(tmp_path)
    pruned = closed_pipe_run("prune", "--store", str(tmp_path / "results"), "--older-than", "10d", env=env)
    assert pruned.returncode == 0, pruned.stderr
    assert "Broken pipe" not in pruned.stderr and "Errno" not in pruned.stderr and "Traceback" not in pruned.stderr
    assert "deleted 400 objects" in pruned.stderr
    assert list(store.list()) == []

    store.put("big/x_artifact_files_blob.bin", b"z" * 300_000, "application/octet-stream")
    shown = closed_pipe_run("cat", "big/x_artifact_files_blob.bin", "--store", str(tmp_path / "results"), env=env)
    assert shown.returncode == 141 and shown.stderr == ""
    listed = closed_pipe_run("config", env=env)
    assert listed.returncode == 141 and listed.stderr == ""


def test_a_command_loads_only_what_its_own_options_need():
    # A fresh interpreter: `serve` starts sooner when the reaper's code is not loaded for its options.
    program = ("import sys; from server_responder.cli import build_parser; build_parser(sys.argv[1]); "
               "print('server_responder.reaper.program' in sys.modules)")
    loaded = {command: subprocess.run([sys.executable, "-c", program, command], capture_output=True, text=True,
                                      check=True).stdout.strip() for command in ("serve", "reap")}
    assert loaded == {"serve": "False", "reap": "True"}
