"""Run the stream worker: consume canonical events, keep per-community windows,
first responses and health in RocksDB-backed Faust tables, emit results to Kafka,
land them in ClickHouse (the sink runs in this process) and serve /metrics and the
read API (/api/communities) on PULSE_WORKER_HOST:PULSE_WORKER_PORT.

Stops gracefully on SIGTERM or Ctrl-C: the current message finishes, output is
flushed and offsets are committed."""

from __future__ import annotations

import argparse

from pipeline.config import Settings

HELP = "run the stream worker (windows, latency, health, ClickHouse sink, read API)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-sink",
        action="store_true",
        help="do not run the ClickHouse sink in this process (run `pulse db sink` elsewhere)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.worker.app import run_worker

    return run_worker(settings, with_sink=not args.no_sink)
