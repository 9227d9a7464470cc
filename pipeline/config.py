"""All configuration, read once from ``PULSE_*`` environment variables.

One home for every setting: each entry in ``VARIABLES`` names its variable, its
default, how it is parsed and whether it is a secret. ``load()`` turns the
environment into a frozen ``Settings``; an invalid value raises ``ConfigError``
naming the variable, so start-up stops with a message a person can act on.
Secrets are kept as ``Secret`` so that printing a ``Settings`` never shows them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pipeline.topics import MAX_BODY_BYTES


class ConfigError(ValueError):
    """A ``PULSE_*`` variable has a value we cannot use."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


class Secret:
    """A string that does not show itself in repr, str, logs or tracebacks."""

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

    def __bool__(self) -> bool:
        return bool(self._value)


# ---------------------------------------------------------------- parsers


def _str(raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ValueError("must not be empty")
    return value


def _int_between(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"must be a whole number, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}, got {value}")
        return value

    return parse


def _positive_float(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError(f"must be a number, got {raw!r}") from None
    if not value > 0:
        raise ValueError(f"must be greater than 0, got {value}")
    return value


def _rate(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError(f"must be a number, got {raw!r}") from None
    if not 0 <= value < float("inf"):
        raise ValueError(f"must be 0 (no limit) or a positive number, got {value}")
    return value


def _port(raw: str) -> int:
    return _int_between(1, 65535)(raw)


def _host(raw: str) -> str:
    value = _str(raw)
    if any(c.isspace() for c in value) or "/" in value:
        raise ValueError(f"must be a host name or address, got {raw!r}")
    return value


def _bootstrap(raw: str) -> str:
    servers = [s.strip() for s in raw.split(",") if s.strip()]
    if not servers:
        raise ValueError("must list at least one host:port")
    for server in servers:
        host, sep, port = server.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"each server must be host:port, got {server!r}")
    return ",".join(servers)


def _clickhouse_url(raw: str) -> str:
    value = _str(raw)
    scheme = urlparse(value).scheme
    if scheme not in ("chdb", "http", "https"):
        raise ValueError(
            "must be chdb://PATH (embedded engine) or an http(s):// ClickHouse server URL, "
            f"got scheme {scheme or '(none)'!r}"
        )
    if scheme == "chdb" and not value[len("chdb://") :]:
        raise ValueError("chdb:// needs a path, e.g. chdb://.pulse/clickhouse")
    return value


def _secret(raw: str) -> Secret | None:
    value = raw.strip()
    return Secret(value) if value else None


def _named_secrets(raw: str) -> dict[str, Secret]:
    """``name=secret,name=secret``; used for per-instance Discourse secrets."""
    result: dict[str, Secret] = {}
    for item in (i.strip() for i in raw.split(",")):
        if not item:
            continue
        name, sep, secret = item.rpartition("=")
        if not sep or not name.strip() or not secret:
            # never echo the item: it holds a secret
            raise ValueError("each entry must be NAME=SECRET (entries separated by commas)")
        result[name.strip().rstrip("/")] = Secret(secret)
    return result


def _ingest_tokens(raw: str) -> dict[str, Secret]:
    """``token`` or ``sender=token`` entries; a bare token's sender is ``sender-N``."""
    result: dict[str, Secret] = {}
    for n, item in enumerate((i.strip() for i in raw.split(",") if i.strip()), start=1):
        sender, sep, token = item.partition("=")
        if not sep:
            sender, token = f"sender-{n}", item
        if not sender.strip() or len(token) < 16:
            raise ValueError("each entry must be TOKEN or SENDER=TOKEN, and a token needs at least 16 characters")
        result[sender.strip()] = Secret(token)
    return result


def _topic_prefix(raw: str) -> str:
    value = raw.strip()
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    if not set(value) <= allowed:
        raise ValueError("may use only letters, digits, '.', '_' and '-'")
    return value


def _path(raw: str) -> Path:
    return Path(_str(raw))


def _optional_path(raw: str) -> Path | None:
    return Path(raw.strip()) if raw.strip() else None


def _log_level(raw: str) -> str:
    value = raw.strip().upper()
    if value not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError(f"must be DEBUG, INFO, WARNING or ERROR, got {raw!r}")
    return value


# ---------------------------------------------------------------- the table


@dataclass(frozen=True)
class Variable:
    name: str  # without the PULSE_ prefix, lower case = Settings attribute
    default: str
    parse: Callable[[str], Any]
    help: str
    secret: bool = False

    @property
    def env(self) -> str:
        return "PULSE_" + self.name.upper()


VARIABLES: tuple[Variable, ...] = (
    Variable("kafka_bootstrap", "127.0.0.1:9092", _bootstrap, "Kafka bootstrap servers, host:port[,host:port]"),
    Variable("topic_prefix", "", _topic_prefix, "Prefix for every Kafka topic and consumer group (isolates test runs)"),
    Variable(
        "clickhouse_url",
        "chdb://.pulse/clickhouse",
        _clickhouse_url,
        "chdb://PATH for the embedded engine, or http(s)://user:password@host:8123/db for a server",
    ),
    Variable("state_dir", ".pulse", _path, "Where local state lives: worker tables, stack pids, logs"),
    Variable("gateway_host", "127.0.0.1", _host, "Address the gateway binds"),
    Variable("gateway_port", "8080", _port, "Port of the gateway"),
    Variable("worker_host", "127.0.0.1", _host, "Address the worker's web server binds"),
    Variable("worker_port", "6066", _port, "Port of the worker's web server (metrics, read API)"),
    Variable("prometheus_port", "9090", _port, "Port of the local Prometheus started by `pulse stack up`"),
    Variable("github_webhook_secret", "", _secret, "Secret of the GitHub webhooks", secret=True),
    Variable(
        "discourse_webhook_secret", "", _secret, "Secret of every Discourse instance without its own", secret=True
    ),
    Variable(
        "discourse_webhook_secrets",
        "",
        _named_secrets,
        "Per-instance Discourse secrets: https://forum.example=SECRET,...",
        secret=True,
    ),
    Variable("slack_signing_secret", "", _secret, "Slack app signing secret", secret=True),
    Variable(
        "ingest_tokens",
        "",
        _ingest_tokens,
        "Bearer tokens of the generic API: TOKEN or SENDER=TOKEN, comma-separated",
        secret=True,
    ),
    Variable("max_body_bytes", str(1024 * 1024), _int_between(1024, MAX_BODY_BYTES), "Largest accepted request body"),
    Variable("produce_timeout_s", "5", _positive_float, "Deadline for Kafka to acknowledge a delivery before 503"),
    Variable(
        "rate_limit_per_s", "500", _rate, "Requests per second each sender may send before 429 (0: no limit)"
    ),
    Variable("rate_limit_burst", "1000", _int_between(1, 1_000_000), "Requests a quiet sender may send at once"),
    Variable("communities_file", "", _optional_path, "JSON file: community renames/groups, type and thresholds"),
    Variable(
        "events_ttl_days", "90", _int_between(1, 3650), "Days canonical events are kept in ClickHouse (by event time)"
    ),
    Variable(
        "stream_idle_s",
        "600",
        _int_between(1, 86_400),
        "Seconds without events after which a community's stream time follows the wall clock minus this",
    ),
    Variable("metrics_max_communities", "2000", _int_between(0, 1_000_000), "Cap on per-community metric series"),
    Variable("log_level", "INFO", _log_level, "DEBUG, INFO, WARNING or ERROR"),
)


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str
    topic_prefix: str
    clickhouse_url: str
    state_dir: Path
    gateway_host: str
    gateway_port: int
    worker_host: str
    worker_port: int
    prometheus_port: int
    github_webhook_secret: Secret | None
    discourse_webhook_secret: Secret | None
    discourse_webhook_secrets: dict[str, Secret] = field(default_factory=dict)
    slack_signing_secret: Secret | None = None
    ingest_tokens: dict[str, Secret] = field(default_factory=dict)
    max_body_bytes: int = 1024 * 1024
    produce_timeout_s: float = 5.0
    rate_limit_per_s: float = 500.0
    rate_limit_burst: int = 1000
    communities_file: Path | None = None
    events_ttl_days: int = 90
    stream_idle_s: int = 600
    metrics_max_communities: int = 2000
    log_level: str = "INFO"

    def discourse_secret_for(self, instance: str) -> Secret | None:
        """The secret of one Discourse instance (its base URL), else the default."""
        return self.discourse_webhook_secrets.get(instance.rstrip("/"), self.discourse_webhook_secret)

    @property
    def embedded_clickhouse(self) -> bool:
        return self.clickhouse_url.startswith("chdb://")

    def topic(self, name: str) -> str:
        return self.topic_prefix + name

    def described(self) -> list[tuple[str, str, str]]:
        """(variable, effective value with secrets masked, help) for `pulse config`."""
        rows = []
        for var in VARIABLES:
            value = getattr(self, var.name)
            rows.append((var.env, _masked(value) if var.secret else _shown(value), var.help))
        return rows


def _masked(value: object) -> str:
    if not value:
        return "(not set)"
    if isinstance(value, dict):
        return ",".join(f"{k}=********" for k in value)
    return "********"


def _shown(value: object) -> str:
    if value is None or value == "":
        return "(not set)"
    text = str(value)
    # a server URL may carry a password: user:password@host
    parsed = urlparse(text)
    if parsed.password:
        text = text.replace(f":{parsed.password}@", ":********@")
    return text


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Read every ``PULSE_*`` variable; raise ``ConfigError`` naming the first bad one."""
    env = os.environ if environ is None else environ
    known = {var.env for var in VARIABLES}
    unknown = sorted(k for k in env if k.startswith("PULSE_") and k not in known)
    if unknown:
        raise ConfigError(unknown[0], "unknown setting (see `pulse config` for the list)")
    values: dict[str, Any] = {}
    for var in VARIABLES:
        raw = env.get(var.env, var.default)
        try:
            values[var.name] = var.parse(raw)
        except ValueError as exc:
            raise ConfigError(var.env, str(exc)) from None
    settings = Settings(**values)
    assert {f.name for f in fields(Settings)} == {v.name for v in VARIABLES}
    return settings
