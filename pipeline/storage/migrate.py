"""Schema migrations of the ClickHouse store: numbered ``.sql`` files in ``schemas/clickhouse/``.

``migrate(client)`` applies, in file-name order, every file not yet recorded in the
``schema_migrations`` table (name, checksum, applied_at) and records it. A file already
applied whose checksum changed is refused: applied migrations are history, add a new file
instead. Every statement must be idempotent on its own (``IF NOT EXISTS``), so a file that
failed half-way can simply be applied again once fixed.

Parsing files (splitting statements, checksums, planning) is pure; only ``migrate`` talks to
ClickHouse.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent.parent / "schemas" / "clickhouse"
MIGRATIONS_TABLE = "schema_migrations"
EVENTS_TABLE = "events"
DEFAULT_EVENTS_TTL_DAYS = 90

_NAME = re.compile(r"^\d{4}_[a-z0-9_]+\.sql$")

_CREATE_MIGRATIONS_TABLE = f"""
CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE}
(
    name       String,
    checksum   String,
    applied_at DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY name
"""


class MigrationError(RuntimeError):
    """A migration could not be applied; the message names the file and the statement."""


@dataclass(frozen=True)
class Migration:
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()

    @property
    def statements(self) -> list[str]:
        return split_statements(self.sql)


# ---------------------------------------------------------------- pure core


def split_statements(sql: str) -> list[str]:
    """Split a script on ``;`` outside quotes and comments; drop empty (comment-only) pieces."""
    statements: list[str] = []
    current: list[str] = []
    i, n = 0, len(sql)
    quote: str | None = None
    while i < n:
        ch = sql[i]
        if quote:
            current.append(ch)
            if ch == "\\" and i + 1 < n:
                current.append(sql[i + 1])
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in ("'", '"', "`"):
            quote = ch
            current.append(ch)
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end == -1 else end
            current.append(sql[i:end])
            i = end
            continue
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            end = n if end == -1 else end + 2
            current.append(sql[i:end])
            i = end
            continue
        elif ch == ";":
            statements.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    statements.append("".join(current))
    return [s.strip() for s in statements if _has_code(s)]


def _has_code(statement: str) -> bool:
    without_line_comments = re.sub(r"--[^\n]*", "", statement)
    without_comments = re.sub(r"/\*.*?\*/", "", without_line_comments, flags=re.DOTALL)
    return bool(without_comments.strip())


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    files = sorted(p for p in directory.glob("*.sql"))
    bad = [p.name for p in files if not _NAME.match(p.name)]
    if bad:
        raise MigrationError(f"{directory / bad[0]}: migration files are named NNNN_snake_case.sql")
    return [Migration(p.name, p.read_text(encoding="utf-8")) for p in files]


def pending(migrations: Iterable[Migration], applied: Mapping[str, str]) -> list[Migration]:
    """Migrations still to apply; refuse if an applied one's file changed since."""
    todo = []
    for migration in migrations:
        recorded = applied.get(migration.name)
        if recorded is None:
            todo.append(migration)
        elif recorded != migration.checksum:
            raise MigrationError(
                f"{migration.name} was applied with checksum {recorded[:12]} but the file now has "
                f"{migration.checksum[:12]}: applied migrations must not change, add a new numbered "
                "file instead"
            )
    return todo


def first_line(statement: str) -> str:
    for line in statement.splitlines():
        code = line.strip()
        if code and not code.startswith("--"):
            return code[:120]
    return statement.strip()[:120]


def ttl_clause(days: int) -> str:
    return f"toDateTime(occurred_at) + toIntervalDay({int(days)})"


def ttl_days_in(engine_full: str) -> int | None:
    """The events TTL in days as ClickHouse reports it in ``system.tables.engine_full``."""
    match = re.search(r"TTL .*?(?:INTERVAL\s+(\d+)\s+DAY|toIntervalDay\((\d+)\))", engine_full, re.I)
    if not match:
        return None
    return int(match.group(1) or match.group(2))


# ---------------------------------------------------------------- shell


def applied_migrations(client: Any) -> dict[str, str]:
    client.command(_CREATE_MIGRATIONS_TABLE)
    rows = client.query(f"SELECT name, checksum FROM {MIGRATIONS_TABLE}").result_rows
    return {str(name): str(checksum) for name, checksum in rows}


def migrate(
    client: Any,
    *,
    directory: Path = MIGRATIONS_DIR,
    events_ttl_days: int | None = None,
) -> list[str]:
    """Apply pending migrations; return the names applied (empty when up to date)."""
    todo = pending(load_migrations(directory), applied_migrations(client))
    done: list[str] = []
    for migration in todo:
        for number, statement in enumerate(migration.statements, start=1):
            try:
                client.command(statement)
            except Exception as exc:
                raise MigrationError(
                    f"{directory / migration.name}: statement {number} ({first_line(statement)!r}) "
                    f"failed: {_short(exc)}"
                ) from exc
        client.insert(
            MIGRATIONS_TABLE,
            [[migration.name, migration.checksum, datetime.now(UTC)]],
            column_names=["name", "checksum", "applied_at"],
        )
        done.append(migration.name)
    if events_ttl_days is not None:
        set_events_ttl(client, events_ttl_days)
    return done


def set_events_ttl(client: Any, days: int) -> bool:
    """Change the raw events' TTL when it differs; return whether it changed."""
    if days < 1:
        raise MigrationError(f"events TTL must be at least 1 day, got {days}")
    rows = client.query(
        "SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = {t:String}",
        parameters={"t": EVENTS_TABLE},
    ).result_rows
    if not rows:
        raise MigrationError(f"table {EVENTS_TABLE} does not exist: run the migrations first")
    if ttl_days_in(str(rows[0][0])) == days:
        return False
    client.command(f"ALTER TABLE {EVENTS_TABLE} MODIFY TTL {ttl_clause(days)}")
    return True


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:500] or type(exc).__name__
