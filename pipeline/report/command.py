"""Print the health of every community: state, flags, activity over 7 days, top-poster share,
median first response and unanswered threads, worst first.

Data source: the worker's read API (http://PULSE_WORKER_HOST:PULSE_WORKER_PORT/api/communities)
when a worker answers; otherwise the ClickHouse store itself. The embedded store (chdb://) can
be opened by one process only, so while a worker holds it, read through the worker.

  pulse report                      table of every community
  pulse report --state dying        only dying communities
  pulse report --platform slack --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode
from urllib.request import urlopen

from pipeline.config import Settings
from pipeline.results import STATES

HELP = "print communities' health: state, flags, activity, top-poster share, response times"

SOURCES = ("auto", "worker", "store")


class ReportError(RuntimeError):
    """The report has no data source; the message says what to do."""


# ---------------------------------------------------------------- formatting (pure)

COLUMNS: tuple[tuple[str, str], ...] = (
    ("COMMUNITY", "community_id"),
    ("PLATFORM", "platform"),
    ("STATE", "state"),
    ("FLAGS", "flags"),
    ("RESPONSIVENESS", "responsiveness"),
    ("POSTS 7D", "posts_7d"),
    ("ACTIVE 7D", "active_members_7d"),
    ("TOP1 28D", "top1_share_28d"),
    ("1ST RESP P50", "first_response_p50_7d_s"),
    ("UNANSWERED", "unanswered_threads"),
)
NUMERIC = frozenset(
    {"posts_7d", "active_members_7d", "top1_share_28d", "first_response_p50_7d_s", "unanswered_threads"}
)

JSON_FIELDS: tuple[str, ...] = (
    "community_id",
    "platform",
    "space_id",
    "community_type",
    "state",
    "flags",
    "responsiveness",
    "posts_7d",
    "active_members_7d",
    "top1_share_28d",
    "first_response_p50_7d_s",
    "unanswered_threads",
    "oldest_unanswered_age_s",
    "posts_28d",
    "baseline_posts_per_week",
    "threads_started_7d",
    "answered_within_sla_7d",
    "last_post_at",
    "stream_time",
)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = float(seconds)
    if s < 90:
        return f"{s:.0f}s"
    if s < 90 * 60:
        return f"{s / 60:.0f}m"
    if s < 48 * 3600:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.1f}d"


def format_share(share: float | None) -> str:
    return "-" if share is None else f"{float(share) * 100:.0f}%"


def cell(field: str, record: dict[str, Any]) -> str:
    value = record.get(field)
    if field == "flags":
        return ",".join(value or []) or "-"
    if field == "top1_share_28d":
        return format_share(value)
    if field == "first_response_p50_7d_s":
        return format_duration(value)
    if value is None:
        return "-"
    return str(value)


def format_table(records: list[dict[str, Any]]) -> str:
    """Aligned text table, one line per community; numbers right-aligned."""
    if not records:
        return "no communities match"
    grid = [[title for title, _ in COLUMNS]]
    grid += [[cell(field, r) for _, field in COLUMNS] for r in records]
    widths = [max(len(row[i]) for row in grid) for i in range(len(COLUMNS))]
    lines = []
    for row in grid:
        parts = [
            text.rjust(w) if field in NUMERIC else text.ljust(w)
            for text, w, (_, field) in zip(row, widths, COLUMNS, strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def to_json(records: list[dict[str, Any]]) -> str:
    out = [{k: r.get(k) for k in JSON_FIELDS} for r in records]
    return json.dumps(out, indent=2, sort_keys=False)


def select(
    records: list[dict[str, Any]],
    state: str | None = None,
    platform: str | None = None,
    community: str | None = None,
) -> list[dict[str, Any]]:
    """Apply the filters again locally (a worker or store may ignore one)."""
    return [
        r
        for r in records
        if (not state or r.get("state") == state)
        and (not platform or r.get("platform") == platform)
        and (not community or r.get("community_id") == community)
    ]


# ---------------------------------------------------------------- sources (I/O)


def worker_url(settings: Settings, state: str | None, platform: str | None) -> str:
    host = "127.0.0.1" if settings.worker_host in ("0.0.0.0", "") else settings.worker_host
    query = urlencode({k: v for k, v in (("state", state), ("platform", platform)) if v})
    return f"http://{host}:{settings.worker_port}/api/communities" + (f"?{query}" if query else "")


def from_worker(url: str, timeout_s: float = 3.0) -> list[dict[str, Any]] | None:
    """The worker's answer, or None when no worker listens there."""
    try:
        with urlopen(url, timeout=timeout_s) as response:
            data = json.loads(response.read().decode("utf-8"))
    except HTTPError as exc:
        if exc.code == 404:
            return None  # something else listens there: not a worker with the read API
        raise ReportError(f"the worker at {url} answered HTTP {exc.code}") from None
    except (URLError, ConnectionError, TimeoutError, OSError):
        return None
    except ValueError:
        raise ReportError(f"the worker at {url} did not answer JSON") from None
    if not isinstance(data, list):
        raise ReportError(f"the worker at {url} answered something else than a list")
    return data


def from_store(settings: Settings, state: str | None, platform: str | None) -> list[dict[str, Any]]:
    from pipeline.storage import client as store
    from pipeline.storage.migrate import migrate
    from pipeline.storage.queries import list_communities

    if settings.embedded_clickhouse:
        path = store.chdb_path(settings.clickhouse_url)
        if not os.path.isdir(path):
            raise ReportError(
                f"no ClickHouse store at {path} yet: start the worker (`pulse worker`) or `pulse run`"
            )
        pid = store.holder_of(path)
        if pid is not None:
            who = f"process {pid}" if pid > 0 else "another process"
            raise ReportError(
                f"the embedded ClickHouse store at {path} is open in {who} (a worker?), and no worker "
                f"read API answered on {worker_url(settings, None, None)}; check PULSE_WORKER_HOST/"
                "PULSE_WORKER_PORT, or stop that process to read the store directly"
            )
    try:
        client = store.connect(settings)
    except store.StoreError as exc:
        raise ReportError(str(exc)) from None
    try:
        migrate(client)  # a store written by an older build still answers
        return list_communities(client, state=state, platform=platform)
    finally:
        store.close_quietly(client)


def fetch(
    settings: Settings, state: str | None, platform: str | None, source: str = "auto"
) -> tuple[list[dict[str, Any]], str]:
    """(records, where they came from)."""
    if source in ("auto", "worker"):
        url = worker_url(settings, state, platform)
        records = from_worker(url)
        if records is not None:
            return records, url
        if source == "worker":
            raise ReportError(f"no worker answered on {url}")
    return from_store(settings, state, platform), "store"


# ---------------------------------------------------------------- command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state", choices=STATES, help="only communities in this state")
    parser.add_argument("--platform", help="only communities of this platform (github, slack, ...)")
    parser.add_argument("--community", metavar="ID", help="only this community")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.add_argument(
        "--source",
        choices=SOURCES,
        default="auto",
        help="where to read: the worker's API, the store, or auto (worker if it answers)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        records, _source = fetch(settings, args.state, args.platform, args.source)
    except ReportError as exc:
        print(f"pulse report: {exc}", file=sys.stderr)
        return 1
    records = select(records, args.state, args.platform, args.community)
    if args.json:
        print(to_json(records))
    else:
        print(format_table(records))
    if args.community and not records:
        print(f"pulse report: no community {args.community!r}", file=sys.stderr)
        return 1
    return 0
