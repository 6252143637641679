"""Reading `.deferred_server` and Procfile the way projects write them."""

import pytest

from server_responder.projects.config import ProjectConfigError, parse_deferred_server, procfile_web


@pytest.mark.parametrize("text", ["churn\n", "bundle exec rake test", "make check && ./report.sh > out\n"])
def test_a_plain_file_is_the_command(text):
    config = parse_deferred_server(text, 3600)
    assert config.command == text.strip()
    assert config.setup is None and config.env == {} and config.timeout is None


def test_an_empty_file_names_no_command():
    assert parse_deferred_server("\n  \n", 3600).command is None


def test_toml_gives_command_setup_env_timeout_and_web():
    config = parse_deferred_server(
        'command = "pytest -q"\nsetup = "pip install -r requirements.txt"\ntimeout = 120\n'
        'web = "python3 app.py"\n[env]\nMODE = "ci"\n', 3600)
    assert (config.command, config.setup, config.timeout, config.web) == (
        "pytest -q", "pip install -r requirements.txt", 120.0, "python3 app.py")
    assert config.env == {"MODE": "ci"}


def test_toml_that_is_not_ours_is_a_plain_command():
    assert parse_deferred_server("x=1", 3600).command == "x=1"


@pytest.mark.parametrize(("text", "mentions"), [
    ('command = 5', "command"),
    ('command = "x"\ntimeout = 99999', "timeout"),
    ('command = "x"\ntimeout = "soon"', "timeout"),
    ('command = "x"\nenv = { "BAD NAME" = "1" }', "env"),
    ('command = "x"\nenv = { A = 1 }', "env"),
    ('command = "x"\nsurprise = 1', "surprise"),
])
def test_malformed_toml_names_the_key(text, mentions):
    with pytest.raises(ProjectConfigError) as failure:
        parse_deferred_server(text, 3600)
    assert mentions in str(failure.value) and ".deferred_server" in str(failure.value)


def test_procfile_web_line():
    assert procfile_web("worker: rake jobs\nweb: bundle exec rackup -p $PORT\n") == "bundle exec rackup -p $PORT"
    assert procfile_web("# comment\nworker: x\n") is None
    assert procfile_web("webby: x\n") is None
