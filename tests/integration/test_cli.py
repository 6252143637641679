"""The command-line client against a real responder."""

import json
import subprocess
import sys

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


def test_every_command_has_help(responder):
    for command in ("serve", "submit", "sign", "config"):
        assert cli(command, "--help", env=responder.env).returncode == 0
