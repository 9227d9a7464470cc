"""`pulse db migrate` as a user runs it (a separate process, its own embedded store)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def pulse(*argv: str, store: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env["PULSE_CLICKHOUSE_URL"] = f"chdb://{store}"
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_db_migrate_applies_once_then_reports_up_to_date(tmp_path: Path) -> None:
    store = tmp_path / "ch"
    first = pulse("db", "migrate", store=store)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("applied: 0001_events.sql, 0002_window_results.sql")
    again = pulse("db", "migrate", "--events-ttl-days", "30", store=store)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == ["schema is up to date", "raw events are kept 30 days"]


def test_db_without_an_action_shows_usage(tmp_path: Path) -> None:
    done = pulse("db", store=tmp_path / "ch")
    assert done.returncode == 2
    assert "migrate" in done.stderr and "sink" in done.stderr
