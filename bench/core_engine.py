"""Benchmark of the pure core: replay Stack Exchange communities through CommunityEngine.

Prints, per community: events, apply() time per event, to_state() time and size
(mean over the replay, sampled, and at the end), from_state() time, and the state
size after the community went quiet for 30 days (what an idle community costs).
A script, never a test: figures depend on the machine.

    .venv/bin/python bench/core_engine.py [community ...]   # default: math 052012-literature
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


def main(argv: list[str]) -> int:
    for community in argv or ["math", "052012-literature"]:
        bench(community)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
