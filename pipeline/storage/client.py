"""Open the ClickHouse store named by ``PULSE_CLICKHOUSE_URL``.

``chdb://PATH`` is the embedded engine (clickhouse-connect's chDB backend, in this process);
``http(s)://user:password@host:port/db`` a ClickHouse server.

The embedded engine has two limits that we turn into clear errors instead of chDB's cryptic ones:
one process may host one chDB path at a time (``StoreBusyError`` when asked for a second path),
and one path may be open in one process only. For the latter we hold an advisory lock file in the
data directory for the life of the process and name the process holding it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import threading
from typing import IO, Any
from urllib.parse import parse_qs, urlparse

from pipeline.config import Settings

LOCK_FILE = ".pulse-owner.lock"
_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class StoreError(RuntimeError):
    """The ClickHouse store cannot be opened."""


class StoreBusyError(StoreError):
    """The embedded store is held by another process, or this process holds another path."""

    def __init__(self, message: str, path: str, holder_pid: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.holder_pid = holder_pid


_guard = threading.Lock()
_held_path: str | None = None
_held_lock: IO[str] | None = None


def chdb_path(url: str) -> str:
    """``chdb://PATH`` -> absolute PATH (``chdb://.pulse/ch`` is relative, ``chdb:///abs`` absolute)."""
    if not url.startswith("chdb://"):
        raise StoreError(f"not an embedded store URL: {url.split('://')[0]}://...")
    raw = url[len("chdb://") :].split("?", 1)[0]
    if not raw:
        raise StoreError("chdb:// needs a path, e.g. chdb://.pulse/clickhouse")
    return os.path.realpath(raw)


def chdb_database(url: str) -> str | None:
    """``chdb://PATH?database=NAME`` -> NAME (created on connect); default database otherwise."""
    query = parse_qs(urlparse(url).query)
    name = (query.get("database") or [""])[0]
    if name and not _DB_NAME.match(name):
        raise StoreError(f"database name must be letters, digits and '_', got {name!r}")
    return name or None


def held_path() -> str | None:
    """The embedded store path this process holds, if any."""
    return _held_path


def _claim(path: str) -> None:
    """Take this process's claim on ``path`` (idempotent for the same path)."""
    global _held_path, _held_lock
    with _guard:
        if _held_path == path:
            return
        if _held_path is not None:
            raise StoreBusyError(
                f"this process already holds the embedded ClickHouse store at {_held_path}; "
                f"chDB allows one path per process, so it cannot also open {path}",
                path,
                os.getpid(),
            )
        os.makedirs(path, exist_ok=True)
        lock = open(os.path.join(path, LOCK_FILE), "a+", encoding="utf-8")  # noqa: SIM115 - held for the process's life
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            text = lock.read().strip()
            lock.close()
            pid = int(text) if text.isdigit() else None
            who = f"process {pid}" if pid else "another process"
            raise StoreBusyError(
                f"the embedded ClickHouse store at {path} is open in {who} (the worker?); "
                "chDB lets only one process open a path: read through that process "
                "(the worker's /api/communities) or stop it first",
                path,
                pid,
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        _held_path, _held_lock = path, lock


def holder_of(path: str) -> int | None:
    """Pid of another process holding the embedded store at ``path``, or None if it is free."""
    lock_path = os.path.join(path, LOCK_FILE)
    if _held_path == path or not os.path.exists(lock_path):
        return None
    with open(lock_path, "a+", encoding="utf-8") as probe:
        try:
            fcntl.flock(probe.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            probe.seek(0)
            text = probe.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(probe.fileno(), fcntl.LOCK_UN)
    return None


def connect(settings: Settings) -> Any:
    """A new clickhouse-connect client on the configured store (each call: its own handle)."""
    import clickhouse_connect
    from clickhouse_connect.driver.exceptions import Error as ClickHouseError

    url = settings.clickhouse_url
    if url.startswith("chdb://"):
        path = chdb_path(url)
        database = chdb_database(url)
        _claim(path)
        try:
            # path passed explicitly: the DSN form would read chdb://.pulse/x as host ".pulse"
            if database:
                setup = clickhouse_connect.get_client(interface="chdb", path=path)
                try:
                    setup.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
                finally:
                    setup.close()
            return clickhouse_connect.get_client(interface="chdb", path=path, database=database)
        except ClickHouseError as exc:
            raise StoreError(f"cannot open the embedded ClickHouse store at {path}: {exc}") from exc
    try:
        return clickhouse_connect.get_client(dsn=url, connect_timeout=5, send_receive_timeout=30)
    except ClickHouseError as exc:
        parsed = urlparse(url)
        where = f"{parsed.scheme}://{parsed.hostname}:{parsed.port or ''}{parsed.path}"
        raise StoreError(f"cannot reach ClickHouse at {where}: {_strip(exc, parsed.password)}") from None


def _strip(exc: BaseException, password: str | None) -> str:
    text = " ".join(str(exc).split())[:300]
    return text.replace(password, "********") if password else text


def release() -> None:
    """Give up this process's claim on its embedded store (close every client on it first).

    Lets a test suite hand the engine to a different path; a long-running process never needs it.
    """
    global _held_path, _held_lock
    with _guard:
        if _held_lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(_held_lock.fileno(), fcntl.LOCK_UN)
            _held_lock.close()
        _held_path, _held_lock = None, None


def close_quietly(client: Any) -> None:
    with contextlib.suppress(Exception):
        client.close()
