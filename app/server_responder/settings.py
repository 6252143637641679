"""Typed, frozen settings built once from a TOML file and the environment."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import shutil
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

ENV_PREFIX = "SERVER_RESPONDER_"
DEFAULT_CONFIG_PATH = Path("/etc/server-responder/config.toml")
SOURCE_LOG_DIR = Path(__file__).resolve().parent.parent / "logs"


class SettingsError(ValueError):
    """A setting is missing, malformed or out of range; the message names the key."""


class Secret:
    """A string that never shows itself in reprs, logs or `config` output."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def default_data_dir() -> Path:
    state_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(state_home) / "server-responder"


def default_languages() -> dict[str, tuple[str, ...]]:
    candidates = {
        "python": ("python3",),
        "bash": ("bash",),
        "sh": ("sh",),
        "ruby": ("ruby",),
        "node": ("node",),
    }
    return {name: argv for name, argv in candidates.items() if shutil.which(argv[0])}


def default_job_memory_max(meminfo: Path = Path("/proc/meminfo")) -> int:
    """Three quarters of the machine's memory, so a job can't take the service down with it; 0 if unknown."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024 * 3 // 4
    except (OSError, ValueError, IndexError):
        pass
    return 0


# What an idle box does: power off (a single box, stopped and woken again), or leave its Auto Scaling group.
IDLE_ACTIONS = ("poweroff", "leave-group")

SECRET_NAMES = ("api_key", "code_secret", "admin_pass", "github_secret")


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = field(default_factory=default_data_dir)
    log_dir: Path | None = None
    work_dir: Path | None = None
    store: str = ""
    public_results: bool = False
    s3_endpoint_url: str = ""
    upload_retry_seconds: float = 5.0
    upload_retry_max_seconds: float = 300.0
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    queue_size: int = 64
    max_body_bytes: int = 1024 * 1024
    # GitHub's largest push payload is 25 MB; a little more so the form encoding fits too.
    max_webhook_body_bytes: int = 26 * 1024 * 1024
    http_threads: int = 32
    max_connections_per_client: int = 16
    request_header_timeout: float = 10.0
    request_body_timeout: float = 60.0
    max_event_streams: int = 0  # 0: a quarter of http_threads
    event_keepalive_seconds: float = 15.0
    metrics_public: bool = False
    pin_service_cpu: bool = True
    default_timeout: float = 300.0
    max_timeout: float = 3600.0
    kill_grace_seconds: float = 5.0
    output_limit_bytes: int = 1024 * 1024
    artifact_file_limit_bytes: int = 20 * 1024 * 1024
    artifact_limit_bytes: int = 50 * 1024 * 1024
    artifact_count_limit: int = 200
    sync_wait_seconds: float = 30.0
    job_user: str = ""
    job_memory_max: int = field(default_factory=default_job_memory_max)
    job_pids_max: int = 512
    job_cpu_weight: int = 50
    languages: Mapping[str, tuple[str, ...]] = field(default_factory=default_languages)
    legacy_script_language: str = "ruby"
    accept_legacy_signatures: bool = False
    signature_max_age_seconds: int = 86400
    cors_origins: tuple[str, ...] = ()
    refused_networks: tuple[str, ...] = ()
    jobs_retained: int = 1000
    jobs_retained_minutes: float = 15.0
    repo_base_url: str = "https://github.com/"
    default_command: str = "churn --yaml"
    history_days: int = 90
    boot_timeout: float = 60.0
    callback_url: str = ""
    idle_shutdown_minutes: float = 0.0
    shutdown_command: tuple[str, ...] = ("systemctl", "poweroff")
    idle_check_seconds: float = 60.0
    idle_boot_grace_minutes: float = 10.0
    max_lifetime_minutes: float = 0.0
    idle_action: str = "poweroff"
    instance_id: str = ""
    queue_url: str = ""
    queue_wait_seconds: int = 20
    queue_visibility_timeout: int = 120
    queue_heartbeat_seconds: float = 30.0
    api_key: Secret | None = None
    code_secret: Secret | None = None
    admin_pass: Secret | None = None
    github_secret: Secret | None = None

    @property
    def event_stream_limit(self) -> int:
        """How many event streams may be open at once: each holds an HTTP thread while it is."""
        return self.max_event_streams or max(1, self.http_threads // 4)

    def __post_init__(self) -> None:
        data_dir = Path(self.data_dir).expanduser()
        object.__setattr__(self, "data_dir", data_dir)
        if self.log_dir is None:
            object.__setattr__(self, "log_dir", SOURCE_LOG_DIR if SOURCE_LOG_DIR.is_dir() else data_dir / "logs")
        if self.work_dir is None:
            object.__setattr__(self, "work_dir", data_dir / "work")
        if not self.store:
            object.__setattr__(self, "store", str(data_dir / "results"))
        _validate(self)

    @property
    def api_token_path(self) -> Path:
        return self.data_dir / "api_token"

    @classmethod
    def from_env(cls, environ: Mapping[str, str], config_path: Path | None = None,
                 overrides: Mapping[str, Any] | None = None) -> Settings:
        """Build settings: TOML file, then `SERVER_RESPONDER_*` variables, then explicit overrides."""
        raw: dict[str, Any] = {}
        path = config_path
        if path is None and DEFAULT_CONFIG_PATH.is_file():
            path = DEFAULT_CONFIG_PATH
        if path is not None:
            raw.update(_read_toml(Path(path)))
        raw.update(_read_environ(environ))
        raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return cls.from_mapping(raw)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> Settings:
        hints = get_type_hints(cls)
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if key.endswith("_file") and key[: -len("_file")] in SECRET_NAMES:
                name = key[: -len("_file")]
                if name not in raw:
                    values[name] = Secret(_read_secret_file(key, value))
                continue
            if key not in known:
                raise SettingsError(f"{key}: unknown setting")
            values[key] = _coerce(key, value, hints[key])
        try:
            return cls(**values)
        except TypeError as error:
            raise SettingsError(str(error)) from None

    def with_api_key(self, api_key: str) -> Settings:
        return dataclasses.replace(self, api_key=Secret(api_key))

    def secrets(self) -> list[str]:
        """Every configured secret value, for redaction."""
        return [s.reveal() for name in SECRET_NAMES if (s := getattr(self, name)) is not None and s.reveal()]

    def redacted(self) -> dict[str, Any]:
        """The effective settings as plain data, secrets shown only as set or unset."""
        shown: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SECRET_NAMES:
                shown[f.name] = "<set>" if value is not None else "<unset>"
            elif isinstance(value, Path):
                shown[f.name] = str(value)
            elif isinstance(value, Mapping):
                shown[f.name] = {k: list(v) for k, v in value.items()}
            elif isinstance(value, tuple):
                shown[f.name] = list(value)
            else:
                shown[f.name] = value
        return shown


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise SettingsError(f"config: file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, OSError) as error:
        raise SettingsError(f"config: cannot read {path}: {error}") from None


def _read_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    known = {f.name for f in fields(Settings)} | {f"{name}_file" for name in SECRET_NAMES}
    raw: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX):].lower()
        if name in known:
            raw[name] = value
    return raw


def _read_secret_file(key: str, path: Any) -> str:
    try:
        return Path(str(path)).read_text().strip()
    except OSError as error:
        raise SettingsError(f"{key}: cannot read {path}: {error.strerror}") from None


def _coerce(key: str, value: Any, hint: Any) -> Any:
    text = isinstance(value, str)
    hint_text = str(hint)
    try:
        if "Secret" in hint_text:
            return Secret(str(value)) if str(value) else None
        if hint is bool:
            if isinstance(value, bool):
                return value
            if text and value.lower() in ("1", "true", "yes", "on"):
                return True
            if text and value.lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError("expected true or false")
        if hint is int:
            if isinstance(value, bool):
                raise ValueError("expected an integer")
            return int(value)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError("expected a number")
            return float(value)
        if hint is str:
            if not isinstance(value, (str, int, float)):
                raise ValueError("expected a string")
            return str(value)
        if "Path" in hint_text:
            return Path(str(value)) if str(value) else None
        if hint_text.startswith("tuple"):
            if text:
                value = json.loads(value) if value.strip().startswith("[") else value.split()
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError("expected a list of strings")
            return tuple(value)
        if "Mapping" in hint_text:
            if text:
                value = json.loads(value)
            if not isinstance(value, Mapping):
                raise ValueError("expected a table of name = [argv, ...]")
            table = {}
            for name, argv in value.items():
                if isinstance(argv, str):
                    argv = argv.split()
                if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
                    raise ValueError(f"{name} must be a non-empty list of strings")
                table[str(name)] = tuple(argv)
            return table
    except (ValueError, TypeError, json.JSONDecodeError) as error:
        raise SettingsError(f"{key}: {error}") from None
    raise SettingsError(f"{key}: unsupported setting type")


def _validate(s: Settings) -> None:
    def check(condition: bool, key: str, message: str) -> None:
        if not condition:
            raise SettingsError(f"{key}: {message}")

    check(bool(s.host), "host", "must not be empty")
    check(1 <= s.port <= 65535 or s.port == 0, "port", "must be between 0 and 65535")
    check(s.workers >= 1, "workers", "must be at least 1")
    check(s.queue_size >= 1, "queue_size", "must be at least 1")
    check(s.max_body_bytes >= 1024, "max_body_bytes", "must be at least 1024")
    check(s.max_webhook_body_bytes >= 1024, "max_webhook_body_bytes", "must be at least 1024")
    check(1 <= s.http_threads <= 1024, "http_threads", "must be between 1 and 1024")
    check(s.max_connections_per_client >= 0, "max_connections_per_client", "must not be negative (0: no bound)")
    check(s.request_header_timeout > 0, "request_header_timeout", "must be positive")
    check(s.request_body_timeout > 0, "request_body_timeout", "must be positive")
    check(s.max_event_streams >= 0, "max_event_streams", "must not be negative (0: a quarter of http_threads)")
    check(s.max_event_streams < s.http_threads, "max_event_streams",
          "must be fewer than http_threads: each open stream holds one")
    check(s.event_keepalive_seconds > 0, "event_keepalive_seconds", "must be positive")
    check(s.default_timeout > 0, "default_timeout", "must be positive")
    check(s.max_timeout >= s.default_timeout, "max_timeout", "must be at least default_timeout")
    check(s.kill_grace_seconds >= 0, "kill_grace_seconds", "must not be negative")
    check(s.output_limit_bytes >= 1, "output_limit_bytes", "must be positive")
    check(s.artifact_file_limit_bytes >= 0, "artifact_file_limit_bytes", "must not be negative")
    check(s.artifact_limit_bytes >= 0, "artifact_limit_bytes", "must not be negative")
    check(s.artifact_count_limit >= 0, "artifact_count_limit", "must not be negative")
    check(s.sync_wait_seconds >= 0, "sync_wait_seconds", "must not be negative")
    check(s.upload_retry_seconds > 0, "upload_retry_seconds", "must be positive")
    check(s.upload_retry_max_seconds >= s.upload_retry_seconds, "upload_retry_max_seconds",
          "must be at least upload_retry_seconds")
    check(s.job_memory_max == 0 or s.job_memory_max >= 4 * 1024 * 1024, "job_memory_max",
          "must be 0 (no limit) or at least 4194304 bytes")
    check(s.job_pids_max == 0 or s.job_pids_max >= 8, "job_pids_max", "must be 0 (no limit) or at least 8")
    check(1 <= s.job_cpu_weight <= 10000, "job_cpu_weight", "must be between 1 and 10000")
    check(s.jobs_retained >= 1, "jobs_retained", "must be at least 1")
    check(s.jobs_retained_minutes >= 0, "jobs_retained_minutes", "must be 0 or more")
    check(s.signature_max_age_seconds >= 0, "signature_max_age_seconds", "must not be negative (0 accepts any)")
    check(s.history_days >= 1, "history_days", "must be at least 1")
    check(s.boot_timeout > 0, "boot_timeout", "must be positive")
    check(s.idle_shutdown_minutes >= 0, "idle_shutdown_minutes", "must not be negative")
    check(s.idle_check_seconds > 0, "idle_check_seconds", "must be positive")
    check(s.idle_boot_grace_minutes >= 0, "idle_boot_grace_minutes", "must not be negative")
    check(s.max_lifetime_minutes >= 0, "max_lifetime_minutes", "must not be negative")
    check(bool(s.shutdown_command), "shutdown_command", "must not be empty")
    check(s.idle_action in IDLE_ACTIONS, "idle_action", f"must be one of {', '.join(IDLE_ACTIONS)}")
    check(not s.instance_id or re.fullmatch(r"i-[0-9a-f]{8,32}", s.instance_id) is not None, "instance_id",
          "must be an EC2 instance id such as i-0123456789abcdef0 (empty: asked of the instance metadata)")
    check(not s.queue_url or s.queue_url.startswith(("http://", "https://")), "queue_url",
          "must be an SQS queue URL (http or https)")
    check(0 <= s.queue_wait_seconds <= 20, "queue_wait_seconds", "must be between 0 and 20 (SQS long polling)")
    check(2 <= s.queue_visibility_timeout <= 43200, "queue_visibility_timeout",
          "must be between 2 and 43200 seconds")
    check(0 < s.queue_heartbeat_seconds < s.queue_visibility_timeout, "queue_heartbeat_seconds",
          "must be positive and shorter than queue_visibility_timeout")
    check(bool(s.languages), "languages", "no interpreter configured or installed")
    check(s.store.startswith(("s3://", "file://", "/")) or "://" not in s.store, "store",
          "must be a path, a file:// URL or an s3://bucket/prefix URL")
    if s.store.startswith("s3://"):
        check(len(s.store) > len("s3://") and not s.store[len("s3://"):].startswith("/"), "store",
              "s3:// URL needs a bucket name")
    for key in ("callback_url", "s3_endpoint_url"):
        value = getattr(s, key)
        check(not value or value.startswith(("http://", "https://")), key, "must be an http or https URL")
    check(s.repo_base_url.startswith(("http://", "https://", "file://", "/", "git@", "ssh://")),
          "repo_base_url", "must be an http(s), ssh or file URL or a local path")
    for network in s.refused_networks:
        try:
            ipaddress.ip_network(network)
        except ValueError:
            check(False, "refused_networks", f"{network!r} is not a network such as 10.0.0.0/8")
    for origin in s.cors_origins:
        check(origin.startswith(("http://", "https://")), "cors_origins", f"{origin!r} is not an origin URL")
    if s.job_user:
        import pwd

        try:
            entry = pwd.getpwnam(s.job_user)
        except KeyError:
            raise SettingsError(f"job_user: no such user {s.job_user!r}") from None
        check(entry.pw_uid != 0, "job_user", "jobs never run as root")
