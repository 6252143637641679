"""What a project says about how to run it: its `.deferred_server` file and the `web:` line of its Procfile."""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field

DEFERRED_SERVER_FILE = ".deferred_server"
PROCFILE = "Procfile"
_CONFIG_KEYS = frozenset({"command", "setup", "env", "timeout", "web"})
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PROCFILE_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")


class ProjectConfigError(ValueError):
    """The project's own configuration is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class ProjectConfig:
    command: str | None = None
    setup: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None
    web: str | None = None


def parse_deferred_server(text: str, max_timeout: float) -> ProjectConfig:
    """A plain command string (as the original read it), or TOML with command, setup, env, timeout, web."""
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        table = None
    if not table or not set(table) & _CONFIG_KEYS:
        command = text.strip()
        return ProjectConfig(command=command or None)
    unknown = sorted(set(table) - _CONFIG_KEYS)
    if unknown:
        raise ProjectConfigError(f"{DEFERRED_SERVER_FILE}: unknown key {unknown[0]!r}; "
                                 f"keys: {', '.join(sorted(_CONFIG_KEYS))}")
    for key in ("command", "setup", "web"):
        value = table.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip() or "\x00" in value):
            raise ProjectConfigError(f"{DEFERRED_SERVER_FILE}: {key} must be a non-empty string")
    env = table.get("env", {})
    if not isinstance(env, dict) or not all(_ENV_NAME.fullmatch(k) and isinstance(v, str) and "\x00" not in v
                                            for k, v in env.items()):
        raise ProjectConfigError(f"{DEFERRED_SERVER_FILE}: env must be a table of NAME = \"value\" strings")
    timeout = table.get("timeout")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) \
                or not 0 < timeout <= max_timeout:
            raise ProjectConfigError(f"{DEFERRED_SERVER_FILE}: timeout must be a number of seconds, "
                                     f"more than 0 and at most {max_timeout:g}")
        timeout = float(timeout)
    return ProjectConfig(command=table.get("command"), setup=table.get("setup"), env=dict(env), timeout=timeout,
                         web=table.get("web"))


def procfile_web(text: str) -> str | None:
    """The command of the `web` process type, as foreman reads a Procfile."""
    for line in text.splitlines():
        match = _PROCFILE_LINE.match(line.strip())
        if match and match.group(1) == "web":
            return match.group(2).strip()
    return None
