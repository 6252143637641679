"""Logging configured once: JSON lines in the log dir, CherryPy's own logs included, secrets redacted, every
time in UTC as ISO-8601 with milliseconds (`2026-12-01T08:38:58.365Z`)."""

from __future__ import annotations

import datetime
import logging
import logging.config
import logging.handlers
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pythonjsonlogger.json import JsonFormatter

LOG_FILE_NAME = "server-responder.log"
# The one logger of every request answered, by the routes or by the HTTP server itself.
ACCESS_LOGGER = "cherrypy.access"
_SECRET_PARAMS = re.compile(r"((?:api_token|signature|token|access_token)=)[^&\s\"]+", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)\S+", re.IGNORECASE)


class RedactSecrets(logging.Filter):
    """Masks configured secrets and token-like query parameters wherever they appear in a record."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if len(s) >= 4]

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "********")
        # Every record passes here: the patterns run only on text that could hold what they mask.
        if "=" in text:
            text = _SECRET_PARAMS.sub(r"\1********", text)
        if "bearer" in text.lower():
            text = _BEARER.sub(r"\1********", text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redact(record.getMessage())
        record.args = None
        fields = vars(record)
        for key, value in fields.items():
            if isinstance(value, str) and key not in _UNREDACTED_FIELDS:
                fields[key] = self.redact(value)
        return True


# The record's own fields that name code, not data (msg is redacted above).
_UNREDACTED_FIELDS = frozenset({"msg", "name", "levelname", "pathname", "filename", "module", "funcName",
                                "threadName", "processName", "taskName"})


def utc_timestamp(created: float) -> str:
    moment = datetime.datetime.fromtimestamp(created, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class UtcJsonFormatter(JsonFormatter):
    """JSON lines whose time is UTC, whatever the host's time zone."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return utc_timestamp(record.created)


class UtcConsoleFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return utc_timestamp(record.created)


# CherryPy starts each of its messages with its own local time, without a zone: the record's time says it.
_CHERRYPY_TIME = re.compile(r"\[\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2}\] ")


class DropCherryPyTime(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("["):
            record.msg = _CHERRYPY_TIME.sub("", record.msg, count=1)
        return True


class RotatingLogFile(logging.handlers.RotatingFileHandler):
    """Rolls over once the file has reached maxBytes. The standard handler formats every record a second
    time (and stats the file) to decide that before writing it; this one counts the bytes it has written since
    it opened the file, without asking the file. A file may end one record past maxBytes."""

    _size = 0

    def _open(self):
        stream = super()._open()
        self._size = stream.tell()  # appending starts at the end of what is there
        return stream

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        if self.stream is None:
            self.stream = self._open()
        return 0 < self.maxBytes <= self._size

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self.shouldRollover(record):
                self.doRollover()
            if self.stream is None:
                self.stream = self._open()
            text = self.format(record) + self.terminator
            self.stream.write(text)
            self.stream.flush()
            # JSON lines are ASCII: their length in characters is their size.
            self._size += len(text) if text.isascii() else len(text.encode(self.encoding or "utf-8", "replace"))
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def logging_config(log_dir: Path, secrets: Iterable[str] = (), level: str = "INFO",
                   console: bool = True) -> dict[str, Any]:
    handlers = ["file", "console"] if console else ["file"]
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactSecrets, "secrets": list(secrets)},
                    "cherrypy_time": {"()": DropCherryPyTime}},
        "formatters": {
            "json": {
                "()": UtcJsonFormatter,
                "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
                "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
                "timestamp": False,
            },
            "console": {"()": UtcConsoleFormatter, "fmt": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        },
        "handlers": {
            "file": {
                "()": RotatingLogFile,
                "filename": str(log_dir / LOG_FILE_NAME),
                "maxBytes": 10 * 1024 * 1024,
                "backupCount": 5,
                "encoding": "utf-8",
                "formatter": "json",
                "filters": ["redact"],
            },
            "console": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "console",
                "filters": ["redact"],
                "level": "WARNING",
            },
        },
        "loggers": {
            "server_responder": {"level": level, "handlers": handlers, "propagate": False},
            ACCESS_LOGGER: {"level": "INFO", "handlers": ["file"], "propagate": False},
            "cherrypy.error": {"level": "INFO", "handlers": handlers, "propagate": False,
                               "filters": ["cherrypy_time"]},
        },
    }


def configure_logging(log_dir: Path, secrets: Iterable[str] = (), console: bool = True) -> None:
    log_dir.mkdir(parents=True, exist_ok=True)
    logging.config.dictConfig(logging_config(log_dir, secrets, console=console))
