"""Worker throughput vs. a bare aiokafka consumer, and state size per community.

    .venv/bin/python bench/worker_throughput.py [--events 40000] [--rounds 2] [--state-communities 10000,100000]

Starts a single-node Kafka broker (pipeline.stack.kafka) on free 127.0.0.1 ports,
produces real Stack Exchange activity (tests/fixtures/activity, all 12 communities,
in event-time order) as canonical events to a fresh topic set, then per round:

- bare: an aiokafka consumer (the library Faust itself consumes with) reads every
  message of engagement.events and does nothing with it; messages per second;
- worker: `pulse worker --no-sink` (Faust agent, RocksDB table, dedupe, windows,
  first responses, health, output topics) in a fresh consumer group, timed from its
  first processed event to its last (polling its /metrics), so start-up and the group
  join are not counted.

Then the state size: engines for N synthetic communities (10 events each, spread
over 3 days) -> bytes of to_state() per community and the Python heap per engine
(tracemalloc), for each N.

Prints figures only: a benchmark, not a test. Everything it starts is stopped by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kafka import KafkaProducer  # noqa: E402

from pipeline import topics  # noqa: E402
from pipeline.core.engine import CommunityEngine  # noqa: E402
from pipeline.core.stackexchange import events_from_rows  # noqa: E402
from pipeline.events import CanonicalEvent  # noqa: E402
from pipeline.stack.kafka import KafkaBroker  # noqa: E402
from pipeline.stack.process import free_port, terminate  # noqa: E402
from pipeline.stack.topics import create_topics  # noqa: E402

ACTIVITY = ROOT / "tests" / "fixtures" / "activity"


def load_events(limit: int) -> list[CanonicalEvent]:
    with open(ACTIVITY / "posts.csv", newline="") as p, open(ACTIVITY / "comments.csv", newline="") as c:
        events = events_from_rows(csv.DictReader(p), csv.DictReader(c))
    return events[:limit]


def produce(bootstrap: str, prefix: str, events: list[CanonicalEvent]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, batch_size=256 * 1024)
    for e in events:
        producer.send(prefix + topics.EVENTS, key=e.community_id.encode(), value=e.to_json_bytes())
    producer.flush(120)
    producer.close()


async def bare_consume(bootstrap: str, topic: str, n: int) -> float:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-bare-{time.time_ns()}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen = 0
    started = 0.0
    try:
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batch.values():
                if records and not started:
                    started = time.perf_counter()
                seen += len(records)
    finally:
        await consumer.stop()
    return n / (time.perf_counter() - started)


def _processed(port: int) -> float:
    import httpx

    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return -1.0
    total = 0.0
    for name in ("pulse_worker_events_processed_total", "pulse_worker_duplicates_total"):
        m = re.search(rf"^{name} (\S+)$", text, re.M)
        total += float(m.group(1)) if m else 0.0
    return total


def worker_rate(bootstrap: str, prefix: str, n: int, workdir: Path) -> float:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update(
        PULSE_KAFKA_BOOTSTRAP=bootstrap,
        PULSE_TOPIC_PREFIX=prefix,
        PULSE_STATE_DIR=str(workdir / "state"),
        PULSE_CLICKHOUSE_URL=f"chdb://{workdir / 'ch'}",
        PULSE_WORKER_PORT=str(port),
        PULSE_LOG_LEVEL="WARNING",
    )
    workdir.mkdir(parents=True, exist_ok=True)
    log = open(workdir / "worker.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "worker", "--no-sink"], env=env, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 900
        first_at = None
        while time.monotonic() < deadline:
            done = _processed(port)
            if done > 0 and first_at is None:
                first_at, first_done = time.perf_counter(), done
            if done >= n:
                return (n - first_done) / (time.perf_counter() - first_at)  # type: ignore[operator]
            time.sleep(0.2)
        raise SystemExit(f"worker did not finish; see {workdir / 'worker.log'}")
    finally:
        terminate(process.pid, 30.0, process)
        log.close()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def state_sizes(counts: list[int]) -> list[tuple[int, float, float]]:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    rows = []
    for n in counts:
        rss_before = _rss_bytes()
        engines = []
        total_bytes = 0
        for i in range(n):
            cid = f"c{i}"
            engine = CommunityEngine(cid, "bench", "space")
            for j in range(10):
                kind = "thread_started" if j % 4 == 0 else "reply"
                event = CanonicalEvent(
                    event_id=f"{cid}-{j}",
                    platform="bench",
                    space_id="space",
                    community_id=cid,
                    kind=kind,
                    actor_id=f"u{(i + j) % 7}",
                    thread_id=f"t{j // 4}",
                    occurred_at=base + timedelta(hours=7 * j),
                )
                engine.apply(event, int(time.time() * 1000))
            total_bytes += len(engine.to_state())
            engines.append(engine)
        rows.append((n, total_bytes / n, (_rss_bytes() - rss_before) / n))
        del engines
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--state-communities", default="10000,100000")
    parser.add_argument("--state-only", action="store_true", help="only the state-size part")
    args = parser.parse_args()
    if args.state_only:
        _print_state(args.state_communities)
        return

    events = load_events(args.events)
    workdir = Path(tempfile.mkdtemp(prefix="pulse-bench-worker-"))
    broker = KafkaBroker(workdir / "kafka", free_port(), free_port(), die_with_parent=True)
    try:
        broker.start()
        broker.wait_ready(120)
        bare, worker = [], []
        for r in range(args.rounds):
            prefix = f"bench{r}."
            create_topics(broker.bootstrap, prefix)
            produce(broker.bootstrap, prefix, events)
            bare.append(asyncio.run(bare_consume(broker.bootstrap, prefix + topics.EVENTS, len(events))))
            worker.append(worker_rate(broker.bootstrap, prefix, len(events), workdir / f"round{r}"))
            print(f"round {r + 1}: bare {bare[-1]:,.0f} msg/s, worker {worker[-1]:,.0f} events/s", flush=True)
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    b, w = statistics.median(bare), statistics.median(worker)
    print(f"\nworker throughput ({len(events):,} real events, median of {args.rounds} rounds)")
    print(f"  bare aiokafka consumer  {b:>10,.0f} msg/s")
    print(f"  pulse worker            {w:>10,.0f} events/s")
    print(f"  worker / bare           {w / b:>10.1%}   (target >= 50%)")
    _print_state(args.state_communities)


def _print_state(counts: str) -> None:
    print("\nstate per community (10 events over ~3 days each)")
    for n, state_b, rss_b in state_sizes([int(x) for x in counts.split(",")]):
        print(f"  {n:>7,} communities: to_state {state_b:,.0f} B/community, memory {rss_b / 1024:,.1f} KiB/community")


if __name__ == "__main__":
    main()
