"""Logging configured once: JSON lines in the log dir, CherryPy's own logs included, secrets redacted."""

from __future__ import annotations

import logging
import logging.config
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

LOG_FILE_NAME = "server-responder.log"
_SECRET_PARAMS = re.compile(r"((?:api_token|signature|token|access_token)=)[^&\s\"]+", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)\S+", re.IGNORECASE)
# A record's own attributes that never hold a caller's text; everything else (the message, extra fields,
# a stack) is redacted.
_PLAIN_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) - {"msg", "exc_text", "stack_info"}


class RedactSecrets(logging.Filter):
    """Masks configured secrets and token-like query parameters wherever they appear in a record."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if len(s) >= 4]

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "********")
        if "=" in text:  # a query parameter needs one
            text = _SECRET_PARAMS.sub(r"\1********", text)
        return _BEARER.sub(r"\1********", text)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redact(record.getMessage())
        record.args = None
        for key, value in list(vars(record).items()):
            if isinstance(value, str) and key not in _PLAIN_ATTRIBUTES:
                setattr(record, key, self.redact(value))
        return True


def logging_config(log_dir: Path, secrets: Iterable[str] = (), level: str = "INFO",
                   console: bool = True) -> dict[str, Any]:
    handlers = ["file", "console"] if console else ["file"]
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactSecrets, "secrets": list(secrets)}},
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
                "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
                "timestamp": False,
            },
            "console": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        },
        "handlers": {
            "file": {
                "class": "logging.handlers.RotatingFileHandler",
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
            "cherrypy.access": {"level": "INFO", "handlers": ["file"], "propagate": False},
            "cherrypy.error": {"level": "INFO", "handlers": handlers, "propagate": False},
        },
    }


def configure_logging(log_dir: Path, secrets: Iterable[str] = (), console: bool = True) -> None:
    log_dir.mkdir(parents=True, exist_ok=True)
    logging.config.dictConfig(logging_config(log_dir, secrets, console=console))
