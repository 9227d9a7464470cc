"""Manage the ClickHouse store.

  pulse db migrate [--events-ttl-days N]   apply pending schema migrations (schemas/clickhouse/)
  pulse db sink                            run the Kafka -> ClickHouse sink on its own

`migrate` is idempotent: it records each applied file (name, checksum, time) and refuses to go
on when an applied file was changed. `sink` is for a ClickHouse server (http(s):// URL); with the
embedded engine (chdb://) the worker runs the sink itself, since only one process may open it.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from pipeline.config import Settings
from pipeline.storage.batching import BatchPolicy

HELP = "ClickHouse store: apply schema migrations, run the sink standalone"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="db_action", metavar="{migrate,sink}", required=True)
    m = actions.add_parser("migrate", help="apply pending schema migrations")
    m.add_argument(
        "--events-ttl-days",
        type=int,
        metavar="N",
        help="keep raw events N days of event time (default set by the migration: 90)",
    )
    s = actions.add_parser("sink", help="consume the result topics into ClickHouse until interrupted")
    s.add_argument("--batch-rows", type=int, default=10_000, help="rows per insert at most")
    s.add_argument(
        "--batch-seconds",
        type=float,
        default=BatchPolicy.max_age_s,
        help=f"longest a row waits for its batch (default {BatchPolicy.max_age_s})",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.storage.client import StoreError, close_quietly, connect
    from pipeline.storage.migrate import MigrationError, migrate

    try:
        client = connect(settings)
    except StoreError as exc:
        print(f"pulse db: {exc}", file=sys.stderr)
        return 1
    try:
        # --events-ttl-days, else a PULSE_EVENTS_TTL_DAYS setting once config.py has one
        ttl = getattr(args, "events_ttl_days", None) or getattr(settings, "events_ttl_days", None)
        try:
            applied = migrate(client, events_ttl_days=ttl)
        except MigrationError as exc:
            print(f"pulse db: migration failed: {exc}", file=sys.stderr)
            return 1
        if args.db_action == "migrate":
            print("applied: " + ", ".join(applied) if applied else "schema is up to date")
            if ttl is not None:
                print(f"raw events are kept {ttl} days")
            return 0
        return _run_sink(args, settings, client)
    finally:
        close_quietly(client)


def _run_sink(args: argparse.Namespace, settings: Settings, client: Any) -> int:
    from pipeline.storage.client import close_quietly
    from pipeline.storage.sink import Sink

    if settings.embedded_clickhouse:
        log.warning(
            "running the sink on the embedded store: no worker may open %s meanwhile",
            settings.clickhouse_url,
        )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    policy = BatchPolicy(max_rows=args.batch_rows, max_age_s=args.batch_seconds)
    sink = Sink(settings, client, policy=policy)
    sink.run(stop)
    if sink.client is not client:  # replaced after a lost connection
        close_quietly(sink.client)
    print(
        f"sink stopped: {sink.stats.total_rows} rows in {sink.stats.batches} batches, "
        f"{sink.stats.dead_letters} dead letters, {sink.stats.failures} failed attempts"
    )
    return 0
