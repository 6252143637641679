"""The log: secrets masked in every field of a record, times in UTC, and the file rolled over at its size."""

from __future__ import annotations

import datetime
import json
import logging
import logging.config
import os
import time

import pytest

from server_responder.logging_setup import (
    ACCESS_LOGGER, LOG_FILE_NAME, RedactSecrets, RotatingLogFile, logging_config, utc_timestamp,
)

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


def test_a_timestamp_is_utc_with_milliseconds_and_z():
    # 2026-12-01 08:38:58.365 UTC
    assert utc_timestamp(1796114338.3659) == "2026-12-01T08:38:58.365Z"
    assert utc_timestamp(0) == "1970-01-01T00:00:00.000Z"


@pytest.fixture
def configured(tmp_path, monkeypatch):
    """The service's logging, in a time zone far from UTC, so a local time would show."""
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")
    time.tzset()
    logging.config.dictConfig(logging_config(tmp_path, [SECRET], console=False))

    def lines() -> list[dict]:
        for name in (ACCESS_LOGGER, "cherrypy.error", "server_responder"):
            for handler in logging.getLogger(name).handlers:
                handler.flush()
        return [json.loads(line) for line in (tmp_path / LOG_FILE_NAME).read_text().splitlines()]

    yield lines
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False,
                               "loggers": {name: {"handlers": [], "propagate": True}
                                           for name in (ACCESS_LOGGER, "server_responder", "cherrypy.error")}})
    logging.getLogger("cherrypy.error").filters.clear()
    monkeypatch.delenv("TZ")
    time.tzset()


def test_the_configured_file_handler_writes_json_lines(configured):
    logging.getLogger(ACCESS_LOGGER).info("seen %s", SECRET, extra={"request_id": "r1"})
    (document,) = configured()
    assert document["logger"] == ACCESS_LOGGER and document["request_id"] == "r1"
    assert SECRET not in json.dumps(document) and document["message"] == "seen ********"


def test_every_line_has_its_time_in_utc(configured):
    before = datetime.datetime.now(datetime.timezone.utc)
    logging.getLogger("server_responder.test").warning("job went wrong")
    logging.getLogger("cherrypy.error").info("[01/Dec/2026:22:38:58] ENGINE Bus STARTED")
    after = datetime.datetime.now(datetime.timezone.utc)
    documents = configured()
    assert len(documents) == 2
    assert os.environ["TZ"] == "Pacific/Kiritimati" and time.localtime().tm_gmtoff == 14 * 3600
    for document in documents:
        stamp = document["time"]
        assert stamp.endswith("Z") and len(stamp) == len("2026-12-01T08:38:58.365Z"), stamp
        moment = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        assert before - datetime.timedelta(milliseconds=1) <= moment <= after
    # CherryPy's own local time, without a zone, is left out of its messages.
    assert documents[1]["message"] == "ENGINE Bus STARTED"
