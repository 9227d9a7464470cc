"""Schema migrations: pure parsing, and the real embedded engine applying them."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.storage.migrate import (
    MIGRATIONS_DIR,
    MIGRATIONS_TABLE,
    Migration,
    MigrationError,
    load_migrations,
    migrate,
    pending,
    set_events_ttl,
    split_statements,
    ttl_days_in,
)

# ---------------------------------------------------------------- pure

code = st.text(alphabet="abcdefgh XYZ(),=0123456789\n", min_size=1, max_size=40).filter(
    lambda s: s.strip() != ""
)


@given(st.lists(code, min_size=1, max_size=6))
def test_split_returns_each_statement(statements: list[str]) -> None:
    script = ";\n".join(statements) + ";\n"
    assert split_statements(script) == [s.strip() for s in statements]


def test_split_ignores_semicolons_in_quotes_and_comments() -> None:
    script = (
        "-- header; with a semicolon\n"
        "CREATE TABLE a (x String DEFAULT 'a;b') ENGINE = Memory; /* c; d */\n"
        "SELECT \"q;uoted\", `b;t`, 'it\\'s; fine';\n"
        "-- only a comment at the end;\n"
    )
    parts = split_statements(script)
    assert len(parts) == 2
    assert parts[0].endswith("ENGINE = Memory")
    assert "'a;b'" in parts[0]
    assert parts[1].startswith("/* c; d */")
    assert parts[1].endswith("'it\\'s; fine'")


def test_shipped_migrations_are_numbered_in_order_and_parse() -> None:
    migrations = load_migrations()
    names = [m.name for m in migrations]
    assert names == sorted(names) and len(names) == len(set(names))
    numbers = [int(n[:4]) for n in names]
    assert numbers == list(range(1, len(names) + 1))
    for m in migrations:
        assert m.statements, m.name
        for statement in m.statements:
            assert "IF NOT EXISTS" in statement.upper(), f"{m.name}: every statement must be idempotent"


def test_pending_skips_applied_and_refuses_a_changed_file() -> None:
    one, two = Migration("0001_a.sql", "CREATE A"), Migration("0002_b.sql", "CREATE B")
    assert pending([one, two], {}) == [one, two]
    assert pending([one, two], {one.name: one.checksum}) == [two]
    with pytest.raises(MigrationError, match=r"0001_a\.sql was applied with checksum"):
        pending([one, two], {one.name: "0" * 64})


def test_ttl_is_read_back_from_the_engine_description() -> None:
    assert ttl_days_in("ReplacingMergeTree ORDER BY x TTL toDateTime(t) + toIntervalDay(30) SETTINGS") == 30
    assert ttl_days_in("MergeTree TTL toDateTime(occurred_at) + INTERVAL 90 DAY") == 90
    assert ttl_days_in("MergeTree ORDER BY x") is None


def test_bad_file_names_are_refused(tmp_path: Path) -> None:
    (tmp_path / "1_x.sql").write_text("SELECT 1")
    with pytest.raises(MigrationError, match=r"NNNN_snake_case"):
        load_migrations(tmp_path)


# ---------------------------------------------------------------- real engine


def tables(client: Any) -> set[str]:
    rows = client.query("SELECT name FROM system.tables WHERE database = currentDatabase()").result_rows
    return {r[0] for r in rows}


def test_migrate_creates_every_table_records_each_file_and_is_idempotent(ch: Any) -> None:
    shipped = [m.name for m in load_migrations()]
    assert migrate(ch) == shipped
    assert {
        "events",
        "window_results",
        "first_responses",
        "health_snapshots",
        "state_changes",
        "state_changes_mv",
        MIGRATIONS_TABLE,
    } <= tables(ch)
    recorded = ch.query(f"SELECT name, checksum, applied_at FROM {MIGRATIONS_TABLE} ORDER BY name").result_rows
    by_name = {m.name: m.checksum for m in load_migrations()}
    assert [(r[0], r[1]) for r in recorded] == sorted(by_name.items())
    assert all(r[2] is not None for r in recorded)
    assert migrate(ch) == []
    assert migrate(ch) == []
    assert ch.command(f"SELECT count() FROM {MIGRATIONS_TABLE}") == len(shipped)


def test_a_broken_migration_names_the_file_and_the_statement(ch: Any, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, directory)
    broken = directory / "0099_broken.sql"
    broken.write_text(
        "-- fine first\nCREATE TABLE IF NOT EXISTS ok_table (x UInt8) ENGINE = Memory;\n"
        "CREATE TABLE IF NOT EXISTS broken_table (x NoSuchType) ENGINE = Memory;\n"
    )
    with pytest.raises(MigrationError) as caught:
        migrate(ch, directory=directory)
    message = str(caught.value)
    assert str(broken) in message
    assert "statement 2" in message
    assert "CREATE TABLE IF NOT EXISTS broken_table" in message
    assert "NoSuchType" in message
    recorded = {r[0] for r in ch.query(f"SELECT name FROM {MIGRATIONS_TABLE}").result_rows}
    assert "0099_broken.sql" not in recorded
    assert "0001_events.sql" in recorded  # the good ones before it stay applied
    # fixed, it applies on the next run
    broken.write_text("CREATE TABLE IF NOT EXISTS ok_table (x UInt8) ENGINE = Memory;\n")
    assert migrate(ch, directory=directory) == ["0099_broken.sql"]


def test_a_changed_applied_migration_is_refused(ch: Any, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, directory)
    migrate(ch, directory=directory)
    target = directory / "0003_first_responses.sql"
    target.write_text(target.read_text() + "\n-- edited after it was applied\n")
    with pytest.raises(MigrationError, match=r"0003_first_responses\.sql was applied with checksum"):
        migrate(ch, directory=directory)


def test_events_ttl_is_configurable_without_editing_the_migration(migrated: Any) -> None:
    def ttl() -> int | None:
        engine = migrated.command(
            "SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = 'events'"
        )
        return ttl_days_in(str(engine))

    assert ttl() == 90
    assert set_events_ttl(migrated, 30) is True
    assert ttl() == 30
    assert set_events_ttl(migrated, 30) is False
    assert migrate(migrated, events_ttl_days=7) == []
    assert ttl() == 7
    with pytest.raises(MigrationError):
        set_events_ttl(migrated, 0)
