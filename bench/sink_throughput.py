"""Sink throughput vs. clickhouse-connect inserting the same rows directly, in the same run.

    .venv/bin/python bench/sink_throughput.py [--rows 60000] [--kind windows|events] [--rounds 3]
                                             [--bootstrap HOST:PORT] [--json PATH]

Without --bootstrap it starts its own single-node Kafka broker on free 127.0.0.1 ports (stopped by
pid at the end). The store is an embedded chDB in a temp dir, one database per measurement.

For each round:
  direct   the rows, already decoded, inserted with client.insert in batches of --batch rows,
           the faster of two forms: the model's values row by row (datetimes), and the very
           columns the sink inserts (column-oriented, times as ticks). The baseline of the target;
  direct+decode  the sink's decode (Table.insert_row) of each message's JSON, then the same
           column-oriented insert: the sink's work minus Kafka, to show where the time goes;
  consume  aiokafka (the sink's consumer) alone reading the same messages, no decode or insert;
  sink     the messages, produced to Kafka beforehand, consumed by pipeline.storage.sink.Sink
           (decode, batch, insert with dedup token, commit offsets). Timed from the first
           message received to the last row stored (consumer-group join excluded).
Prints rows/s of each and sink/direct; --json PATH writes them as a bench.figures.Report.
Numbers only: this is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.figures import Figure, Report, write  # noqa: E402
from pipeline import config, topics  # noqa: E402
from pipeline.events import CanonicalEvent, stable_event_id  # noqa: E402
from pipeline.results import WindowResult  # noqa: E402
from pipeline.storage.batching import BatchPolicy  # noqa: E402
from pipeline.storage.client import close_quietly, connect  # noqa: E402
from pipeline.storage.migrate import migrate  # noqa: E402
from pipeline.storage.rows import TABLE_BY_TOPIC, Table, to_insert_values  # noqa: E402
from pipeline.storage.sink import Sink  # noqa: E402


def make_messages(kind: str, n: int) -> tuple[str, list[tuple[bytes, bytes]]]:
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    out: list[tuple[bytes, bytes]] = []
    if kind == "events":
        for i in range(n):
            community = f"c{i % 200}"
            e = CanonicalEvent(
                event_id=stable_event_id("bench", i),
                platform="slack",
                space_id="T1",
                community_id=community,
                kind="reply" if i % 4 else "thread_started",
                actor_id=f"u{i % 997}",
                thread_id=f"th{i // 4}",
                occurred_at=now - timedelta(seconds=n - i),
                received_at=now,
            )
            out.append((community.encode(), e.to_json_bytes()))
        return topics.EVENTS, out
    for i in range(n):
        community = f"c{i % 500}"
        start = now - timedelta(hours=i // 500)
        w = WindowResult(
            community_id=community,
            platform="discourse",
            space_id="forum.example",
            window="1h",
            window_start=start,
            window_end=start + timedelta(hours=1),
            version=1 + i % 3,
            final=i % 2 == 0,
            threads_started=i % 7,
            replies=i % 31,
            posts=i % 38,
            active_members=i % 11,
            top1_share=0.25,
            top3_share=0.5,
            gini=0.3,
            absence_factor=2,
            first_response_p50_s=120.0,
            first_response_p90_s=900.0,
            emitted_at=start + timedelta(minutes=61),
        )
        out.append((w.key.encode(), w.to_json_bytes()))
    return topics.WINDOWS, out


def fresh_client(base: str) -> Any:
    settings = config.load({"PULSE_CLICKHOUSE_URL": f"{base}?database=b_{uuid.uuid4().hex[:10]}"})
    client = connect(settings)
    migrate(client)
    return client, settings


def count(client: Any, table: str) -> int:
    return int(client.command(f"SELECT count() FROM {table}"))


def timed(fn: Callable[[], None]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_direct(base: str, table: Table, messages: list[tuple[bytes, bytes]], batch: int, form: str) -> float:
    """Rows/s of client.insert; ``form``: "rows" (model values, row-oriented), "columns" (the
    sink's insert values, column-oriented, transposed beforehand) or "decode+columns" (the sink's
    decode and transposition inside the timing)."""
    client, _ = fresh_client(base)
    try:
        model_rows = [table.decode(v) for _, v in messages]
        spans = range(0, len(messages), batch)
        chunks = [list(zip(*map(to_insert_values, model_rows[i : i + batch]), strict=True)) for i in spans]

        def run() -> None:
            if form == "rows":
                for i in spans:
                    client.insert(table.name, model_rows[i : i + batch], column_names=table.columns)
            elif form == "columns":
                for columns in chunks:
                    client.insert(table.name, columns, column_names=table.columns, column_oriented=True)
            else:
                rows = [table.insert_row(v) for _, v in messages]
                for i in spans:
                    columns = list(zip(*rows[i : i + batch], strict=True))
                    client.insert(table.name, columns, column_names=table.columns, column_oriented=True)

        seconds = timed(run)
        assert count(client, table.name) == len(messages)
        return len(messages) / seconds
    finally:
        client.command(f"DROP DATABASE IF EXISTS `{client.database}`")
        close_quietly(client)


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, batch_size=256 * 1024)
    for key, value in messages:
        producer.send(topic, key=key, value=value)
    producer.flush(120)
    producer.close(10)


def bench_consume(bootstrap: str, topic: str, n: int) -> float:
    """aiokafka alone (the sink's consumer, same fetch size), no group: msg/s from the first record."""
    import asyncio

    from aiokafka import AIOKafkaConsumer

    async def run() -> float:
        # no group: a subscription without one is given every partition, from the beginning
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        await consumer.start()
        try:
            seen = 0
            started: float | None = None
            deadline = time.monotonic() + 600
            while seen < n and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=200, max_records=10_000)).values():
                    if started is None:
                        started = time.perf_counter()
                    seen += len(records)
            assert started is not None and seen >= n
            return n / (time.perf_counter() - started)
        finally:
            await consumer.stop()

    return asyncio.run(run())


def bench_sink(
    base: str, bootstrap: str, topic_name: str, messages: list[tuple[bytes, bytes]], batch: int
) -> tuple[float, float]:
    from pipeline.stack.topics import create_topics

    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    create_topics(bootstrap, prefix)
    client, store_settings = fresh_client(base)
    settings = config.load(
        {
            "PULSE_KAFKA_BOOTSTRAP": bootstrap,
            "PULSE_TOPIC_PREFIX": prefix,
            "PULSE_CLICKHOUSE_URL": store_settings.clickhouse_url,
        }
    )
    produce(bootstrap, settings.topic(topic_name), messages)
    consume_rate = bench_consume(bootstrap, settings.topic(topic_name), len(messages))
    sink = Sink(settings, connect(settings), policy=BatchPolicy(max_rows=batch, max_age_s=1.0))
    try:
        deadline = time.monotonic() + 600
        started: float | None = None
        while sink.stats.total_rows < len(messages):
            if time.monotonic() > deadline:
                raise SystemExit(f"sink did not finish: {sink.stats}")
            sink.run_once(0.2)
            if started is None and (sink.pending or sink.stats.total_rows):
                started = time.perf_counter()
        assert started is not None
        seconds = time.perf_counter() - started
        table = TABLE_BY_TOPIC[topic_name]
        assert count(client, table.name) >= 1
        return len(messages) / seconds, consume_rate
    finally:
        sink.close()
        close_quietly(sink.client)
        client.command(f"DROP DATABASE IF EXISTS `{client.database}`")
        close_quietly(client)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--kind", choices=("windows", "events"), default="windows")
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    parser.add_argument("--json", help="write the figures here (bench.figures.Report)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="pulse-bench-sink-"))
    base = f"chdb://{workdir / 'ch'}"
    broker = None
    bootstrap = args.bootstrap
    if not bootstrap:
        from pipeline.stack.kafka import KafkaBroker
        from pipeline.stack.process import free_port

        broker = KafkaBroker(workdir / "kafka", free_port(), free_port(), die_with_parent=True)
        broker.start()
        broker.wait_ready(120)
        bootstrap = broker.bootstrap
    try:
        topic_name, messages = make_messages(args.kind, args.rows)
        table = TABLE_BY_TOPIC[topic_name]
        size = sum(len(v) for _, v in messages) / len(messages)
        print(
            f"{args.rows} {args.kind} rows ({size:.0f} bytes of JSON each), "
            f"batches of {args.batch}, table {table.name}"
        )
        names = ("direct rows", "direct columns", "direct+decode", "consume", "sink")
        results: dict[str, list[float]] = {k: [] for k in names}
        ratios: list[float] = []
        load_start = os.getloadavg()[0]
        print(f"load average at start: {load_start:.1f} on {os.cpu_count()} CPUs")
        for r in range(1, args.rounds + 1):
            results["direct rows"].append(bench_direct(base, table, messages, args.batch, "rows"))
            results["direct columns"].append(bench_direct(base, table, messages, args.batch, "columns"))
            results["direct+decode"].append(bench_direct(base, table, messages, args.batch, "decode+columns"))
            sink_rate, consume_rate = bench_sink(base, bootstrap, topic_name, messages, args.batch)
            results["sink"].append(sink_rate)
            results["consume"].append(consume_rate)
            direct = max(results["direct rows"][-1], results["direct columns"][-1])
            ratios.append(sink_rate / direct)
            print(
                f"round {r}: direct rows {results['direct rows'][-1]:,.0f} rows/s, "
                f"direct columns {results['direct columns'][-1]:,.0f} rows/s, "
                f"direct+decode {results['direct+decode'][-1]:,.0f} rows/s, "
                f"consume {consume_rate:,.0f} msg/s, sink {sink_rate:,.0f} rows/s ({ratios[-1]:.0%} of direct)"
            )
        med = {k: statistics.median(v) for k, v in results.items()}
        # the baseline is the faster direct form, round by round (never the weaker one)
        best = [max(a, b) for a, b in zip(results["direct rows"], results["direct columns"], strict=True)]
        direct = statistics.median(best)
        ratio = med["sink"] / direct
        print(f"median  direct rows     {med['direct rows']:>10,.0f} rows/s  (model values, row-oriented)")
        print(f"median  direct columns  {med['direct columns']:>10,.0f} rows/s  (the sink's columns, prepared)")
        print(f"median  direct+decode   {med['direct+decode']:>10,.0f} rows/s  (the sink's decode + insert, no Kafka)")
        print(f"median  consume only    {med['consume']:>10,.0f} msg/s  (aiokafka, no decode/insert)")
        print(f"median  sink            {med['sink']:>10,.0f} rows/s")
        print(f"sink / direct           {ratio:>10.0%}   (medians; target >= 80%)")
        print(f"rounds' sink / direct   {', '.join(f'{r:.0%}' for r in ratios)}")
        print(f"load average at end: {os.getloadavg()[0]:.1f}")

        report = Report("sink", "bench/sink_throughput.py " + " ".join(sys.argv[1:]))
        report.notes += [
            f"{args.rows} {args.kind} rows of {size:.0f} bytes of JSON, batches of {args.batch}, embedded chDB",
            f"{args.rounds} rounds; load average {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end",
            "direct insert = the faster of client.insert of the model's rows and of the sink's own columns",
        ]
        report.add(
            Figure(
                "sink",
                round(statistics.median(results["sink"])),
                "rows/s",
                baseline="direct insert",
                baseline_value=round(direct),
                target=">= 80 % of direct",
                met=ratio >= 0.8,
            )
        )
        context = {
            "direct insert, model rows": ("direct rows", "rows/s"),
            "direct insert, sink's columns": ("direct columns", "rows/s"),
            "decode + insert, no Kafka": ("direct+decode", "rows/s"),
            "aiokafka consume only": ("consume", "msg/s"),
        }
        for name, (key, unit) in context.items():
            report.add(Figure(name, round(med[key]), unit, baseline="direct insert", baseline_value=round(direct)))
        write(args.json, report)
    finally:
        if broker is not None:
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
