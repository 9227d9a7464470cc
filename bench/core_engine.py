"""Benchmark of the pure core: replay Stack Exchange communities through CommunityEngine.

Runs the engine as the worker does (``emit_on_apply=False``, ``advance`` + ``to_state`` at
each flush, here every 200 events) and prints, per community: events, apply + flush time
per event, to_state() time and size (mean over the replay, and at the end), from_state()
time, and the state size after the community went quiet for 30 days (what an idle
community costs). Times are CPU time of this process (steadier than wall time on a
shared machine). ``--busy``: a synthetic busy channel (10,000 events/day for 8 days,
2,000 members). A script, never a test: figures depend on the machine.

    .venv/bin/python bench/core_engine.py [--json PATH] [community ...]   # default: math 052012-literature
    .venv/bin/python bench/core_engine.py --busy [--per-day 10000] [--days 8]
    .venv/bin/python bench/core_engine.py --steady 20 [--minutes 60]

``--steady RATE``: one community receiving RATE events/s (event time = arrival), flushed every
10 events and saved every 5 s of event time, as the worker saves a busy partition; prints its
apply + advance time per event over each stretch, the mean ``state_writes()`` time and bytes
(what the worker writes: changed pages and the head) over the stretch, and the whole state's
size and to_state() time, after 1, 5, 15 minutes and at the end. Until 2026-12-05 the worker
wrote the whole state at each save, so to_state() is what a save cost before pages.

    .venv/bin/python bench/core_engine.py --live 1000 [--seconds 120]

``--live N``: the worker's step without its I/O: 1,000 events/s in event time spread over N
communities (weights 1/(i+1)^0.6, as bench/e2e_freshness.py sends them), through
``Processor.handle_event``, a flush of every partition each 0.25 s (saving each 5 s) and,
each 0.25 s, the health refresh and the ``/metrics?name[]=`` page that the e2e prober reads.
Prints CPU time per event and outputs and saves per event: with many quiet communities
nearly every event is flushed on its own, so this is the per-event cost of the live path.
"""

from __future__ import annotations

import argparse
import csv
import random
import statistics
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.figures import Figure, Report, write  # noqa: E402
from pipeline.core.engine import CommunityEngine  # noqa: E402
from pipeline.core.stackexchange import events_from_rows  # noqa: E402
from pipeline.core.windows import DEFAULT_WINDOWS  # noqa: E402
from pipeline.events import CanonicalEvent  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "activity"
DAY_MS = 86_400_000
FLUSH_EVERY = 200
WORKER_MODE = replace(DEFAULT_WINDOWS, emit_on_apply=False)


def bench(community: str, report: Report) -> None:
    with (
        open(FIXTURES / "posts.csv", newline="", encoding="utf-8") as p,
        open(FIXTURES / "comments.csv", newline="", encoding="utf-8") as c,
    ):
        events = events_from_rows(csv.DictReader(p), csv.DictReader(c), [community])
    payloads = [e.to_json_bytes() for e in events]
    t = time.process_time()
    for payload in payloads:
        CanonicalEvent.from_json_bytes(payload)
    decode_s = time.process_time() - t
    engine = CommunityEngine(community, "stackexchange", "stackexchange.com", windows_config=WORKER_MODE)
    apply_s = 0.0
    state_times: list[float] = []
    sizes: list[int] = []
    windows = 0
    for i, event in enumerate(events):
        t = time.process_time()
        engine.apply(event, event.occurred_ms)
        if i % FLUSH_EVERY == FLUSH_EVERY - 1:
            windows += len(engine.advance(event.occurred_ms).windows)
        apply_s += time.process_time() - t
        if i % FLUSH_EVERY == FLUSH_EVERY - 1:
            t = time.process_time()
            state = engine.to_state()
            state_times.append(time.process_time() - t)
            sizes.append(len(state))
    state = engine.to_state()
    t = time.process_time()
    for _ in range(20):
        CommunityEngine.from_state(state, engine.policy)
    load_ms = (time.process_time() - t) / 20 * 1000
    engine.advance(events[-1].occurred_ms + 30 * DAY_MS)
    idle = engine.to_state()
    per_event_us = apply_s / len(events) * 1e6
    decode_us = decode_s / len(events) * 1e6
    print(
        f"{community}: {len(events)} events, {windows} window rows; "
        f"apply + flush {per_event_us:.0f} µs/event (decoding the event's JSON: {decode_us:.0f} µs); "
        f"to_state mean {statistics.fmean(state_times) * 1000:.2f} ms "
        f"(max {max(state_times) * 1000:.2f}), size mean {statistics.fmean(sizes) / 1024:.1f} KiB "
        f"(max {max(sizes) / 1024:.1f}, end {len(state) / 1024:.1f}); "
        f"from_state {load_ms:.2f} ms; idle 30 d: {len(idle) / 1024:.1f} KiB; "
        f"health {engine.health().state} {engine.health().flags}"
    )
    decode_name = f"{community}: decode per event"
    report.add(Figure(decode_name, decode_us, "µs"))
    report.add(Figure(f"{community}: engine per event", per_event_us, "µs", decode_name, decode_us))
    report.add(Figure(f"{community}: to_state", statistics.fmean(state_times) * 1000, "ms"))
    report.add(Figure(f"{community}: state size", statistics.fmean(sizes) / 1024, "KiB"))
    report.add(Figure(f"{community}: from_state", load_ms, "ms"))
    report.add(Figure(f"{community}: state size after 30 d idle", len(idle) / 1024, "KiB"))
    report.notes.append(f"{community}: {len(events):,} real events replayed in time order")


def _slack_post(community: str, n: int, starts_thread: bool, thread: str, actor: str, at_ms: int) -> CanonicalEvent:
    """Post number ``n`` of a synthetic Slack channel (the busy and steady ones)."""
    when = datetime.fromtimestamp(at_ms / 1000, UTC)
    return CanonicalEvent(
        event_id=f"e{n}",
        platform="slack",
        space_id="T1",
        community_id=community,
        kind="thread_started" if starts_thread else "reply",
        actor_id=actor,
        thread_id=thread,
        occurred_at=when,
        received_at=when,
    )


def busy(per_day: int, days: int, report: Report) -> None:
    rnd = random.Random(1)
    t0 = int(datetime(2024, 5, 6, tzinfo=UTC).timestamp() * 1000)
    engine = CommunityEngine("busy", "slack", "T1", windows_config=WORKER_MODE)
    n = 0
    start = time.process_time()
    for day in range(days):
        for i in range(per_day):
            at = t0 + day * DAY_MS + i * (DAY_MS // per_day)
            thread = f"t{day}-{i}" if i % 10 == 0 else f"t{day}-{i - i % 10 - 10 * rnd.randrange(3)}"
            event = _slack_post("busy", n, i % 10 == 0, thread, f"u{rnd.randrange(2000)}", at)
            engine.apply(event, at)
            n += 1
            if n % FLUSH_EVERY == 0:
                engine.advance(at)
    elapsed = time.process_time() - start
    t = time.process_time()
    state = engine.to_state()
    for _ in range(4):
        engine.to_state()
    to_state_ms = (time.process_time() - t) / 5 * 1000
    print(
        f"busy: {n} events ({per_day}/day for {days} d); apply+advance {elapsed / n * 1e6:.0f} µs/event "
        f"(including building the events); to_state {to_state_ms:.1f} ms, {len(state) / 1024:.0f} KiB; "
        f"threads kept {len(engine.threads)}, event ids kept {len(engine.dedupe)}"
    )
    report.add(Figure("busy channel: engine per event", elapsed / n * 1e6, "µs"))
    report.add(Figure("busy channel: state size", len(state) / 1024, "KiB"))
    report.add(Figure("busy channel: to_state", to_state_ms, "ms"))
    report.notes.append(f"busy channel: synthetic, {per_day:,} events/day for {days} d, 2,000 members")


def steady(rate: int, minutes: float, report: Report) -> None:
    rnd = random.Random(1)
    t0 = int(datetime(2026, 12, 4, tzinfo=UTC).timestamp() * 1000)
    engine = CommunityEngine("steady", "slack", "T1", windows_config=WORKER_MODE)
    total = int(minutes * 60 * rate)
    checkpoints = {m * 60 * rate for m in (1, 5, 15) if m * 60 * rate < total} | {total}
    # apply + advance CPU time since the previous checkpoint (event building excluded)
    engine_s, stretch_from = 0.0, 0
    saves: list[tuple[float, int]] = []  # (CPU s, bytes) of each state_writes() in the stretch
    for n in range(1, total + 1):
        at = t0 + n * 1000 // rate
        thread = f"t{n}" if n % 10 == 0 else f"t{n - n % 10 - 10 * rnd.randrange(3)}"
        event = _slack_post("steady", n, n % 10 == 0, thread, f"u{rnd.randrange(500)}", at)
        t = time.process_time()
        engine.apply(event, at)
        if n % 10 == 0:
            engine.advance(at)
        engine_s += time.process_time() - t
        if n % (5 * rate) == 0:
            t = time.process_time()
            writes = engine.state_writes()
            saves.append((time.process_time() - t, sum(len(record or b"") for _, record in writes)))
        if n in checkpoints:
            per_event_us = engine_s / (n - stretch_from) * 1e6
            engine_s, stretch_from = 0.0, n
            t = time.process_time()
            state = engine.to_state()
            for _ in range(4):
                engine.to_state()
            to_state_ms = (time.process_time() - t) / 5 * 1000
            label = f"{n // rate // 60} min"
            save_ms = statistics.fmean(c for c, _ in saves) * 1000 if saves else 0.0
            save_kib = statistics.fmean(b for _, b in saves) / 1024 if saves else 0.0
            saves.clear()
            print(
                f"steady {rate}/s after {label}: apply+advance {per_event_us:.0f} µs/event since the last line; "
                f"a save (every 5 s) {save_ms:.2f} ms, {save_kib:,.0f} KiB; "
                f"whole state {len(state) / 1024:,.0f} KiB, to_state {to_state_ms:.1f} ms; "
                f"event ids kept {len(engine.dedupe):,}, threads kept {len(engine.threads):,}",
                flush=True,
            )
            report.add(Figure(f"steady {rate}/s up to {label}: engine per event", per_event_us, "µs"))
            report.add(Figure(f"steady {rate}/s after {label}: state size", len(state) / 1024, "KiB"))
            report.add(Figure(f"steady {rate}/s after {label}: to_state", to_state_ms, "ms"))
            report.add(Figure(f"steady {rate}/s up to {label}: a save (state_writes)", save_ms, "ms"))
            report.add(Figure(f"steady {rate}/s up to {label}: bytes a save writes", save_kib, "KiB"))
    report.notes.append(f"steady: one synthetic community at {rate} events/s for {minutes:g} min, 500 members")


def live(communities: int, seconds: float, report: Report) -> None:
    from prometheus_client import CollectorRegistry

    from pipeline import topics
    from pipeline.communities import load_directory
    from pipeline.metrics import WorkerMetrics
    from pipeline.worker.processing import Processor, write_saves

    rate, flush_ms, save_ms = 1000, 250, 5000
    rnd = random.Random(1)
    weights = [1 / (i + 1) ** 0.6 for i in range(communities)]
    t0 = int(datetime(2026, 12, 4, 12, tzinfo=UTC).timestamp() * 1000)
    table: dict[bytes, bytes] = {}
    processor = Processor(load_directory(None), table.get, topics.EVENT_PARTITIONS)
    metrics = WorkerMetrics(CollectorRegistry(), max_communities=communities)
    scraped = ["pulse_community_posts", "pulse_worker_events_processed_total"]
    posted = [0] * communities
    events: list[tuple[int, bytes]] = []
    for n, c in enumerate(rnd.choices(range(communities), weights, k=int(rate * seconds))):
        k = posted[c]
        posted[c] += 1
        thread = f"t{k - k % 10 - 10 * rnd.randrange(3)}" if k >= 10 else "t0"
        at = t0 + n * 1000 // rate
        post = _slack_post(f"c{c}", n, k % 10 == 0, f"t{k}" if k % 10 == 0 else thread, f"u{rnd.randrange(200)}", at)
        events.append((at, post.to_json_bytes()))
    outputs = saves = 0
    last_flush = last_save = t0
    start = time.process_time()
    for at, data in events:
        processor.handle_event(data, at)
        if at - last_flush >= flush_ms:
            save = at - last_save >= save_ms
            for partition in range(topics.EVENT_PARTITIONS):
                result = processor.flush(partition, at, save=save)
                outputs += len(result.outputs)
                saves += len(result.saves)
                write_saves(table, result.saves)
            last_flush, last_save = at, at if save else last_save
            metrics.communities.update(processor.current_health())
            metrics.exposition(scraped)
    per_event_us = (time.process_time() - start) / len(events) * 1e6
    print(
        f"live over {communities:,} communities, {len(events):,} events: {per_event_us:.0f} µs CPU/event; "
        f"{outputs / len(events):.2f} outputs and {saves / len(events):.2f} state saves per event"
    )
    report.add(Figure(f"live path, {communities:,} communities: CPU per event", per_event_us, "µs"))
    report.notes.append(f"live: {seconds:g} s of 1,000 events/s over {communities:,} communities")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("communities", nargs="*", default=["math", "052012-literature"])
    parser.add_argument("--busy", action="store_true", help="only the synthetic busy channel")
    parser.add_argument("--no-busy", action="store_true", help="skip the synthetic busy channel")
    parser.add_argument("--per-day", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=8)
    parser.add_argument("--steady", type=int, metavar="RATE", help="only one community at RATE events/s")
    parser.add_argument("--minutes", type=float, default=60.0, help="how long --steady runs (event time)")
    parser.add_argument("--live", type=int, metavar="N", help="only the live path over N communities")
    parser.add_argument("--seconds", type=float, default=120.0, help="how long --live runs (event time)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures there (bench.figures.Report)")
    args = parser.parse_args(argv)
    report = Report("core", "bench/core_engine.py " + " ".join(argv))
    if args.live:
        live(args.live, args.seconds, report)
        write(args.json, report)
        return 0
    if args.steady:
        steady(args.steady, args.minutes, report)
        write(args.json, report)
        return 0
    if not args.busy:
        for community in args.communities:
            bench(community, report)
    if not args.no_busy:
        busy(args.per_day, args.days, report)
    write(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
