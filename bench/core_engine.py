"""Benchmark of the pure core: replay Stack Exchange communities through CommunityEngine.

Prints, per community: events, apply() time per event, to_state() time and size
(mean over the replay, sampled, and at the end), from_state() time, and the state
size after the community went quiet for 30 days (what an idle community costs).
A script, never a test: figures depend on the machine.

    .venv/bin/python bench/core_engine.py [community ...]   # default: math 052012-literature
    .venv/bin/python bench/core_engine.py --busy [events_per_day] [days]
        # synthetic busy channel (default 10,000 events/day for 8 days, 2,000 members),
        # emit_on_apply=False with advance() every 200 events, as a batching worker would
"""

from __future__ import annotations

import csv
import statistics
import sys
import time
from pathlib import Path

from pipeline.core.engine import CommunityEngine
from pipeline.core.stackexchange import events_from_rows

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "activity"
DAY_MS = 86_400_000


def bench(community: str) -> None:
    with (
        open(FIXTURES / "posts.csv", newline="", encoding="utf-8") as p,
        open(FIXTURES / "comments.csv", newline="", encoding="utf-8") as c,
    ):
        events = events_from_rows(csv.DictReader(p), csv.DictReader(c), [community])
    engine = CommunityEngine(community, "stackexchange", "stackexchange.com")
    apply_s = 0.0
    state_times: list[float] = []
    sizes: list[int] = []
    windows = 0
    for i, event in enumerate(events):
        t = time.perf_counter()
        em = engine.apply(event, event.occurred_ms)
        apply_s += time.perf_counter() - t
        windows += len(em.windows)
        if i % 25 == 0:
            t = time.perf_counter()
            state = engine.to_state()
            state_times.append(time.perf_counter() - t)
            sizes.append(len(state))
    state = engine.to_state()
    t = time.perf_counter()
    for _ in range(20):
        CommunityEngine.from_state(state, engine.policy)
    load_ms = (time.perf_counter() - t) / 20 * 1000
    engine.advance(events[-1].occurred_ms + 30 * DAY_MS)
    idle = engine.to_state()
    print(
        f"{community}: {len(events)} events, {windows} window rows; "
        f"apply {apply_s / len(events) * 1e6:.0f} us/event; "
        f"to_state mean {statistics.fmean(state_times) * 1000:.2f} ms "
        f"(max {max(state_times) * 1000:.2f}), size mean {statistics.fmean(sizes) / 1024:.1f} KiB "
        f"(max {max(sizes) / 1024:.1f}, end {len(state) / 1024:.1f}); "
        f"from_state {load_ms:.2f} ms; idle 30 d: {len(idle) / 1024:.1f} KiB; "
        f"health {engine.health().state} {engine.health().flags}"
    )


def busy(per_day: int, days: int) -> None:
    import random
    from datetime import UTC, datetime

    from pipeline.core.windows import WindowsConfig
    from pipeline.events import CanonicalEvent

    rnd = random.Random(1)
    t0 = int(datetime(2024, 5, 6, tzinfo=UTC).timestamp() * 1000)
    engine = CommunityEngine("busy", "slack", "T1", windows_config=WindowsConfig(emit_on_apply=False))
    n = 0
    start = time.perf_counter()
    for day in range(days):
        for i in range(per_day):
            at = t0 + day * DAY_MS + i * (DAY_MS // per_day)
            thread = f"t{day}-{i}" if i % 10 == 0 else f"t{day}-{i - i % 10 - 10 * rnd.randrange(3)}"
            event = CanonicalEvent(
                event_id=f"e{n}",
                platform="slack",
                space_id="T1",
                community_id="busy",
                kind="thread_started" if i % 10 == 0 else "reply",
                actor_id=f"u{rnd.randrange(2000)}",
                thread_id=thread,
                occurred_at=datetime.fromtimestamp(at / 1000, UTC),
                received_at=datetime.fromtimestamp(at / 1000, UTC),
            )
            engine.apply(event, at)
            n += 1
            if n % 200 == 0:
                engine.advance(at)
    elapsed = time.perf_counter() - start
    t = time.perf_counter()
    state = engine.to_state()
    for _ in range(4):
        engine.to_state()
    print(
        f"busy: {n} events ({per_day}/day for {days} d); apply+advance {elapsed / n * 1e6:.0f} us/event; "
        f"to_state {(time.perf_counter() - t) / 5 * 1000:.1f} ms, {len(state) / 1024:.0f} KiB; "
        f"threads kept {len(engine.threads)}, event ids kept {len(engine.dedupe)}"
    )


def main(argv: list[str]) -> int:
    if argv[:1] == ["--busy"]:
        numbers = [int(a) for a in argv[1:3]]
        busy(*(numbers + [10_000, 8][len(numbers) :]))
        return 0
    for community in argv or ["math", "052012-literature"]:
        bench(community)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
