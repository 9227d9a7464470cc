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
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kafka import KafkaProducer  # noqa: E402

from bench.figures import Figure, Report, write  # noqa: E402
from pipeline import topics  # noqa: E402
from pipeline.core.engine import CommunityEngine  # noqa: E402
from pipeline.core.stackexchange import events_from_rows  # noqa: E402
from pipeline.events import CanonicalEvent  # noqa: E402
from pipeline.stack.kafka import KafkaBroker  # noqa: E402
from pipeline.stack.process import free_port, terminate  # noqa: E402
from pipeline.stack.topics import create_topics  # noqa: E402
from pipeline.worker.processing import EMIT_ON_FLUSH  # noqa: E402

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


def _noop_agent(bootstrap: str, topic: str, n: int, out: str, datadir: str) -> None:
    """The ceiling for any Faust agent: iterate the same topic, ack, do nothing (subprocess)."""
    import faust

    app = faust.App(
        f"bench-noop-{time.time_ns()}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        datadir=datadir,
        web_enabled=False,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        topic_disable_leader=True,
    )
    source = app.topic(topic, key_type=bytes, value_type=bytes)
    seen = 0
    started = cpu_started = 0.0

    @app.agent(source)
    async def noop(stream: Any) -> None:
        nonlocal seen, started, cpu_started
        async for _event in stream.events():
            if not seen:
                started, cpu_started = time.perf_counter(), time.process_time()
            seen += 1
            if seen == n:
                # the first message is not timed: same rule as for the worker
                rate = (n - 1) / (time.perf_counter() - started)
                cpu_us = (time.process_time() - cpu_started) / (n - 1) * 1e6
                Path(out).write_text(f"{rate} {cpu_us}")

    faust.Worker(app, loglevel="WARNING", quiet=True, override_logging=False).execute_from_commandline()


def noop_agent_rate(bootstrap: str, topic: str, n: int, workdir: Path) -> tuple[float, float]:
    """(messages/s, CPU µs per message of the whole process)."""
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "noop-rate"
    log = open(workdir / "noop.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, __file__, "--noop-agent", bootstrap, topic, str(n), str(out), str(workdir / "noop")],
        stdout=log,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if out.exists() and out.read_text():
                rate, cpu_us = out.read_text().split()
                return float(rate), float(cpu_us)
            if process.poll() is not None:
                break
            time.sleep(0.2)
        raise SystemExit(f"no-op agent did not finish; see {workdir / 'noop.log'}")
    finally:
        terminate(process.pid, 30.0, process)
        log.close()


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


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_rate(bootstrap: str, prefix: str, n: int, workdir: Path) -> tuple[float, float]:
    """(events/s, CPU µs per event of the whole worker process), from its first event to its last."""
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
                first_at, first_done, first_cpu = time.perf_counter(), done, _cpu_s(process.pid)
            if done >= n:
                elapsed = time.perf_counter() - first_at  # type: ignore[operator]
                cpu = _cpu_s(process.pid) - first_cpu
                return (n - first_done) / elapsed, cpu / (n - first_done) * 1e6
            time.sleep(0.2)
        raise SystemExit(f"worker did not finish; see {workdir / 'worker.log'}")
    finally:
        terminate(process.pid, 30.0, process)
        log.close()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


STATE_EVENTS = 3  # per synthetic community: a thread and two replies, 8 hours apart


def _community_events(i: int, base: datetime) -> list[CanonicalEvent]:
    """A small community: STATE_EVENTS posts 8 hours apart by a few members."""
    cid = f"c{i}"
    return [
        CanonicalEvent(
            event_id=f"{cid}-{j}",
            platform="bench",
            space_id="space",
            community_id=cid,
            kind="thread_started" if j % 3 == 0 else "reply",
            actor_id=f"u{(i + j) % 7}",
            thread_id=f"t{j // 3}",
            occurred_at=base + timedelta(hours=8 * j),
        )
        for j in range(STATE_EVENTS)
    ]


def resident_engine_memory(n: int) -> float:
    """Python heap bytes per engine when every engine stays in memory (tracemalloc: exact where
    resident memory would not grow inside a heap that earlier work left free)."""
    import tracemalloc

    base = datetime(2026, 1, 1, tzinfo=UTC)
    wall = int(time.time() * 1000)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    engines = []
    for i in range(n):
        engine = CommunityEngine(f"c{i}", "bench", "space", windows_config=EMIT_ON_FLUSH)
        for event in _community_events(i, base):
            engine.apply(event, wall)
        engine.advance(wall)
        engines.append(engine)
    per = (tracemalloc.get_traced_memory()[0] - before) / n
    tracemalloc.stop()
    del engines
    return per


def worker_state(sizes: list[int], workdir: Path) -> list[tuple[int, float, float, int]]:
    """The worker's Processor over a RocksDB table (rocksdict, what Faust's store uses), fed
    communities one after another, flushed as the worker does (saves written to the table).

    One pass up to the largest size; at each size: (communities, saved state bytes per
    community, resident memory growth per community, engines in memory).
    """
    from rocksdict import Rdict

    from pipeline.communities import load_directory
    from pipeline.worker.processing import Processor

    base = datetime(2026, 1, 1, tzinfo=UTC)
    wall = int(time.time() * 1000)
    rss_before = _rss_bytes()
    table = Rdict(str(workdir / "table"))

    def load(key: bytes) -> bytes | None:
        value: bytes | None = table.get(key)
        return value

    processor = Processor(load_directory(None), load, topics.EVENT_PARTITIONS)
    state_bytes = 0
    rows = []
    for i in range(max(sizes)):
        for event in _community_events(i, base):
            processor.handle_event(event.to_json_bytes(), wall)
        if i % 200 == 199 or i + 1 in sizes:
            for part in range(topics.EVENT_PARTITIONS):
                for _, writes in processor.flush(part, wall).saves:
                    for key, record in writes:
                        assert record is not None  # communities of a few events never drop a page
                        table[key] = record
                        state_bytes += len(record)
        if i + 1 in sizes:
            processor.current_health()  # what the metrics export keeps per community
            n = i + 1
            rows.append((n, state_bytes / n, (_rss_bytes() - rss_before) / n, processor.resident))
    table.close()
    del processor
    return rows


def main() -> None:
    if sys.argv[1:2] == ["--noop-agent"]:
        bootstrap, topic, n, out, datadir = sys.argv[2:7]
        _noop_agent(bootstrap, topic, int(n), out, datadir)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--state-communities", default="10000,100000")
    parser.add_argument("--state-only", action="store_true", help="only the state-size part")
    parser.add_argument("--json", metavar="PATH", help="also write the figures there (bench.figures.Report)")
    args = parser.parse_args()
    report = Report("worker", "bench/worker_throughput.py " + " ".join(sys.argv[1:]))
    # state first: resident memory is measured as growth, in a heap nothing else has used yet
    _state(args.state_communities, report)
    if not args.state_only:
        _throughput(args.events, args.rounds, report)
    write(args.json, report)


def _throughput(n_events: int, rounds: int, report: Report) -> None:
    events = load_events(n_events)
    workdir = Path(tempfile.mkdtemp(prefix="pulse-bench-worker-"))
    broker = KafkaBroker(workdir / "kafka", free_port(), free_port(), die_with_parent=True)
    bare: list[float] = []
    noop: list[float] = []
    worker: list[float] = []
    noop_cpu: list[float] = []
    worker_cpu: list[float] = []
    try:
        broker.start()
        broker.wait_ready(120)
        for r in range(rounds):
            prefix = f"bench{r}."
            create_topics(broker.bootstrap, prefix)
            produce(broker.bootstrap, prefix, events)
            source = prefix + topics.EVENTS
            bare.append(asyncio.run(bare_consume(broker.bootstrap, source, len(events))))
            rate, cpu = noop_agent_rate(broker.bootstrap, source, len(events), workdir / f"noop{r}")
            noop.append(rate)
            noop_cpu.append(cpu)
            rate, cpu = worker_rate(broker.bootstrap, prefix, len(events), workdir / f"round{r}")
            worker.append(rate)
            worker_cpu.append(cpu)
            print(
                f"round {r + 1}: bare {bare[-1]:,.0f} msg/s, no-op Faust agent {noop[-1]:,.0f} msg/s "
                f"({noop_cpu[-1]:,.0f} µs CPU/msg), worker {worker[-1]:,.0f} events/s ({worker_cpu[-1]:,.0f} µs "
                f"CPU/event) (load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    b, o, w = statistics.median(bare), statistics.median(noop), statistics.median(worker)
    oc, wc = statistics.median(noop_cpu), statistics.median(worker_cpu)
    print(f"\nworker throughput ({len(events):,} real events, median of {rounds} rounds)")
    print(f"  bare aiokafka consumer  {b:>10,.0f} msg/s")
    print(f"  no-op Faust agent       {o:>10,.0f} msg/s   ({o / b:.1%} of bare: the ceiling of any Faust agent)")
    print(f"  pulse worker            {w:>10,.0f} events/s   ({w / o:.1%} of the no-op agent)")
    print(f"  worker / bare           {w / b:>10.1%}   (target >= 50%)")
    print(f"  CPU per message: no-op Faust agent {oc:,.0f} µs, worker {wc:,.0f} µs (whole process, all threads)")
    bare_name = "bare aiokafka consumer"
    report.notes.append(f"{len(events):,} real Stack Exchange events, 12 communities; median of {rounds} rounds")
    report.add(Figure(bare_name, b, "msg/s"))
    report.add(Figure("no-op Faust agent", o, "msg/s", bare_name, b))
    report.add(Figure("worker", w, "events/s", bare_name, b, ">= 50 % of bare", w >= 0.5 * b))
    report.add(Figure("worker vs no-op Faust agent", w, "events/s", "no-op Faust agent", o))
    # CPU per event does not depend on how loaded the machine is (rates do)
    report.add(Figure("worker CPU per event", wc, "µs", "no-op Faust agent CPU per message", oc))


def _state(counts: str, report: Report) -> None:
    sizes = sorted(int(x) for x in counts.split(","))
    print(f"\nstate per community ({STATE_EVENTS} posts 8 h apart each)")
    workdir = Path(tempfile.mkdtemp(prefix="pulse-bench-state-"))
    try:
        for n, state_b, rss_b, resident in worker_state(sizes, workdir):
            print(
                f"  {n:>7,} communities: saved state {state_b:,.0f} B/community; worker memory "
                f"{rss_b / 1024:,.2f} KiB/community ({resident:,} engines in memory, the rest in RocksDB)"
            )
            report.add(Figure(f"state per community at {n:,}", state_b, "B"))
            report.add(Figure(f"memory per community at {n:,}", rss_b / 1024, "KiB"))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    n_resident = min(2_000, min(sizes))
    engine_b = resident_engine_memory(n_resident)
    print(f"  one engine in memory: {engine_b / 1024:,.1f} KiB (Python heap, over {n_resident:,} engines)")
    report.add(Figure("memory per resident engine", engine_b / 1024, "KiB"))
    report.notes.append(
        f"state: {STATE_EVENTS} posts 8 h apart per community; memory = resident growth of the worker's "
        "Processor (LRU of engines, due index, last health per community) over a RocksDB table, per community"
    )


if __name__ == "__main__":
    main()
