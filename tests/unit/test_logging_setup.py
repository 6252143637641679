"""The log: secrets masked in every field of a record, and the file rolled over at its size."""

from __future__ import annotations

import json
import logging
import logging.config

import pytest

from server_responder.logging_setup import LOG_FILE_NAME, RedactSecrets, RotatingLogFile, logging_config

SECRET = "configured-secret-value"


def record(msg: str, args=None, **extra) -> logging.LogRecord:
    made = logging.LogRecord("server_responder.test", logging.INFO, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(made, key, value)
    return made


@pytest.mark.parametrize("text, hidden", [
    (f"a {SECRET} b", SECRET),
    ("GET /?api_token=abc123&x=1", "abc123"),
    ("POST /jobs?Token=zz9 HTTP/1.1", "zz9"),
    ("Authorization: bEaReR tok-42", "tok-42"),
])
def test_secrets_are_masked_in_the_message_and_in_extra_fields(text, hidden):
    given = record("%s", (text,), path=text, count=3)
    assert RedactSecrets([SECRET]).filter(given)
    assert hidden not in given.getMessage() and hidden not in given.path
    assert "********" in given.getMessage() and "********" in given.path
    assert given.count == 3


def test_text_without_secrets_is_kept_as_it_is():
    given = record('127.0.0.1 - - "GET /health HTTP/1.1" 200 5', path="/jobs/a=b", remote="127.0.0.1")
    RedactSecrets([SECRET]).filter(given)
    assert given.getMessage() == '127.0.0.1 - - "GET /health HTTP/1.1" 200 5'
    assert given.path == "/jobs/a=b" and given.remote == "127.0.0.1"


def test_the_log_file_rolls_over_once_it_reaches_its_size(tmp_path):
    handler = RotatingLogFile(str(tmp_path / "x.log"), maxBytes=100, backupCount=2, encoding="utf-8")
    try:
        for n in range(12):
            handler.emit(record(f"line {n:02d} " + "x" * 20))
    finally:
        handler.close()
    sizes = [path.stat().st_size for path in sorted(tmp_path.iterdir())]
    assert len(sizes) == 3, sizes
    # Each file ends at most one record past the limit.
    assert all(size <= 100 + 30 for size in sizes), sizes
    assert "line 11" in (tmp_path / "x.log").read_text()


def test_the_configured_file_handler_writes_json_lines(tmp_path):
    config = logging_config(tmp_path, [SECRET], console=False)
    logging.config.dictConfig(config)
    try:
        logging.getLogger("cherrypy.access").info("seen %s", SECRET, extra={"request_id": "r1"})
        for handler in logging.getLogger("cherrypy.access").handlers:
            handler.flush()
        line, = (tmp_path / LOG_FILE_NAME).read_text().splitlines()
        document = json.loads(line)
        assert document["logger"] == "cherrypy.access" and document["request_id"] == "r1"
        assert SECRET not in line and document["message"] == "seen ********"
    finally:
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False,
                                   "loggers": {"cherrypy.access": {"handlers": [], "propagate": True},
                                               "server_responder": {"handlers": [], "propagate": True},
                                               "cherrypy.error": {"handlers": [], "propagate": True}}})
