"""Opening the store: URL forms, and clear errors for the embedded engine's one-owner rule."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pipeline import config
from pipeline.storage import client as store

ROOT = Path(__file__).resolve().parents[2]


def test_chdb_paths_resolve_relative_and_absolute(tmp_path: Path) -> None:
    assert store.chdb_path(f"chdb://{tmp_path}/ch") == str(tmp_path / "ch")
    assert store.chdb_path("chdb://.pulse/clickhouse") == os.path.realpath(".pulse/clickhouse")
    assert store.chdb_path(f"chdb://{tmp_path}/ch?database=x") == str(tmp_path / "ch")
    assert store.chdb_database(f"chdb://{tmp_path}/ch?database=abc_1") == "abc_1"
    assert store.chdb_database(f"chdb://{tmp_path}/ch") is None
    with pytest.raises(store.StoreError):
        store.chdb_database("chdb://x?database=a;DROP")


def test_the_client_answers_in_its_own_database(ch: Any, store_url: str) -> None:
    assert ch.command("SELECT currentDatabase()") == store.chdb_database(store_url)
    assert ch.command("SELECT 1 + 1") == 2


def test_a_second_path_in_this_process_is_a_clear_error(ch: Any, tmp_path: Path) -> None:
    other = config.load({"PULSE_CLICKHOUSE_URL": f"chdb://{tmp_path}/other"})
    expected = r"already holds the embedded ClickHouse store at .*one path per process"
    with pytest.raises(store.StoreBusyError, match=expected):
        store.connect(other)


def test_another_process_is_told_who_holds_the_store(ch: Any, chdb_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        from pipeline import config
        from pipeline.storage import client as store
        try:
            store.connect(config.load({{"PULSE_CLICKHOUSE_URL": "chdb://{chdb_path}"}}))
        except store.StoreBusyError as exc:
            print("BUSY", exc.holder_pid, exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.stdout.startswith(f"BUSY {os.getpid()} "), done.stdout + done.stderr
    assert f"open in process {os.getpid()}" in done.stdout
    assert store.holder_of(str(chdb_path)) is None  # we hold it ourselves: nobody else


def test_holder_of_names_another_process(tmp_path: Path) -> None:
    path = tmp_path / "held"
    script = textwrap.dedent(
        f"""
        import sys
        from pipeline import config
        from pipeline.storage import client as store
        store.connect(config.load({{"PULSE_CLICKHOUSE_URL": "chdb://{path}"}}))
        print("ready", flush=True)
        sys.stdin.read()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        assert store.holder_of(str(path)) == proc.pid
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    assert store.holder_of(str(path)) is None


def test_an_unreachable_server_is_a_clear_error_without_the_password() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # nothing listens on the port any more
    settings = config.load({"PULSE_CLICKHOUSE_URL": f"http://pulse:s3cr3t-pw@127.0.0.1:{port}/default"})
    with pytest.raises(store.StoreError) as caught:
        store.connect(settings)
    message = str(caught.value)
    assert f"cannot reach ClickHouse at http://127.0.0.1:{port}" in message
    assert "s3cr3t-pw" not in message
