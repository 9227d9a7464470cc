"""`pulse report`: pure formatting, and the two data sources (worker API, store) for real."""

from __future__ import annotations

import argparse
import dataclasses
import json
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from hypothesis import given
from hypothesis import strategies as st
from storage_samples import health

from pipeline import config
from pipeline.report import command as report
from pipeline.storage.queries import list_communities
from pipeline.storage.rows import TABLES

ROOT = Path(__file__).resolve().parents[2]


def record(cid: str, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "community_id": cid,
        "platform": "slack",
        "state": "healthy",
        "flags": [],
        "responsiveness": "on_demand",
        "posts_7d": 12,
        "active_members_7d": 4,
        "top1_share_28d": 0.5,
        "first_response_p50_7d_s": 600.0,
        "unanswered_threads": 1,
    }
    base.update(kw)
    return base


# ---------------------------------------------------------------- pure


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0, "0s"), (45, "45s"), (600, "10m"), (5400, "1.5h"), (3 * 86400, "3.0d")],
)
def test_durations_read_naturally(seconds: float | None, text: str) -> None:
    assert report.format_duration(seconds) == text


@given(st.floats(0, 10 * 365 * 86400, allow_nan=False))
def test_every_duration_has_a_unit(seconds: float) -> None:
    assert report.format_duration(seconds)[-1] in "smhd"


def test_table_has_a_header_and_one_aligned_line_per_community() -> None:
    records = [
        record("forum/general", state="dying", flags=["dying", "unanswered_backlog"], posts_7d=3),
        record("c", top1_share_28d=0.934, first_response_p50_7d_s=None, unanswered_threads=12),
    ]
    lines = report.format_table(records).splitlines()
    assert len(lines) == 3
    assert lines[0].split()[:3] == ["COMMUNITY", "PLATFORM", "STATE"]
    assert "dying,unanswered_backlog" in lines[1]
    assert lines[2].split()[-4:] == ["4", "93%", "-", "12"]
    # right-aligned numbers end in the same column
    assert lines[1].rstrip().endswith("1") and len(lines[1].rstrip()) == len(lines[2].rstrip())
    assert report.format_table([]) == "no communities match"


def test_json_keeps_the_identity_state_and_every_figure_shown() -> None:
    out = json.loads(report.to_json([record("a", state="dead", flags=["dead"])]))
    assert out[0]["community_id"] == "a" and out[0]["state"] == "dead" and out[0]["flags"] == ["dead"]
    shown = {field for _, field in report.COLUMNS}
    assert shown <= set(out[0])


def test_filters_select_locally() -> None:
    records = [record("a", state="dead"), record("b", platform="github"), record("c")]
    assert [r["community_id"] for r in report.select(records, state="dead")] == ["a"]
    assert [r["community_id"] for r in report.select(records, platform="github")] == ["b"]
    assert [r["community_id"] for r in report.select(records, community="c")] == ["c"]


# ---------------------------------------------------------------- with real sources


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture
def filled(migrated: Any, store_settings: config.Settings) -> config.Settings:
    snapshots = [
        health("a", "dying", 5, previous="healthy", flags=["dying", "unanswered_backlog"]),
        health("b", "dead", 1, platform="github", unanswered_threads=0),
        health("c", "healthy", 2, top1_share_28d=0.2),
    ]
    table = next(t for t in TABLES if t.name == "health_snapshots")
    migrated.insert(
        table.name, [tuple(s.__dict__[c] for c in table.columns) for s in snapshots], column_names=table.columns
    )
    # no worker on this port: the report must read the store
    return dataclasses.replace(store_settings, worker_port=free_port())


def test_report_reads_the_store_when_no_worker_answers(filled: config.Settings, capsys: Any) -> None:
    assert report.run(args("--json"), filled) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(r["community_id"], r["state"]) for r in out] == [("b", "dead"), ("a", "dying"), ("c", "healthy")]
    assert out[1]["flags"] == ["dying", "unanswered_backlog"]
    assert report.run(args("--state", "dying"), filled) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 2 and table[1].startswith("a ")
    assert report.run(args("--community", "nobody"), filled) == 1


@pytest.fixture
def worker_api(migrated: Any, filled: config.Settings) -> Iterator[config.Settings]:
    """A stand-in worker read API serving list_communities of the real store, as the worker does."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlparse(self.path)
            seen.append(self.path)
            if url.path != "/api/communities":
                self.send_error(404)
                return
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            body = json.dumps(list_communities(migrated, q.get("state"), q.get("platform"))).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield dataclasses.replace(filled, worker_host="127.0.0.1", worker_port=server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert seen  # the report did ask the worker


def test_report_prefers_the_worker_api_with_filters_as_query_parameters(
    worker_api: config.Settings, capsys: Any
) -> None:
    records, source = report.fetch(worker_api, "dead", "github")
    assert source.endswith("/api/communities?state=dead&platform=github")
    assert [r["community_id"] for r in records] == ["b"]
    assert report.run(args("--platform", "slack", "--json"), worker_api) == 0
    assert [r["community_id"] for r in json.loads(capsys.readouterr().out)] == ["a", "c"]


def test_a_store_held_by_another_process_gives_a_clear_message(tmp_path: Path, capsys: Any) -> None:
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
        settings = config.load(
            {"PULSE_CLICKHOUSE_URL": f"chdb://{path}", "PULSE_WORKER_PORT": str(free_port())}
        )
        assert report.run(args(), settings) == 1
        err = capsys.readouterr().err
        assert f"open in process {proc.pid}" in err
        assert "no worker read API answered" in err
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_no_store_yet_is_a_clear_message(tmp_path: Path, capsys: Any) -> None:
    settings = config.load(
        {"PULSE_CLICKHOUSE_URL": f"chdb://{tmp_path}/none", "PULSE_WORKER_PORT": str(free_port())}
    )
    assert report.run(args(), settings) == 1
    assert "no ClickHouse store at" in capsys.readouterr().err
