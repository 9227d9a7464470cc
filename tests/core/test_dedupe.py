"""Deduplication memory: bounded by lateness and by entries; compact round trip."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.dedupe import Deduper
from pipeline.core.windows import HOUR_MS


def test_seen_after_add_and_forgotten_after_its_hour_leaves_the_horizon() -> None:
    d = Deduper(max_entries=100)
    d.add("a", 5 * HOUR_MS + 10)
    d.add("b", 7 * HOUR_MS)
    assert d.seen("a") and d.seen("b") and not d.seen("c")
    d.prune(6 * HOUR_MS - 1)  # hour 5 not yet entirely before the horizon
    assert d.seen("a")
    d.prune(6 * HOUR_MS)
    assert not d.seen("a") and d.seen("b")
    assert len(d) == 1


def test_entry_cap_forgets_oldest_hours_first() -> None:
    d = Deduper(max_entries=3)
    for i, hour in enumerate([1, 2, 3, 4]):
        d.add(f"e{i}", hour * HOUR_MS)
    assert len(d) <= 3
    assert not d.seen("e0") and d.seen("e3")


@given(st.lists(st.tuples(st.text(min_size=1, max_size=30), st.integers(0, 10**13)), max_size=50))
def test_round_trip_keeps_every_id(entries: list[tuple[str, int]]) -> None:
    d = Deduper(max_entries=1000)
    for event_id, at in entries:
        d.add(event_id, at)
    back = Deduper.from_plain(1000, d.to_plain())
    assert len(back) == len(d)
    for event_id, _ in entries:
        assert back.seen(event_id)
