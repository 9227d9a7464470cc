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


class _KeepsEveryEncoding(Deduper):
    packed_from = 1


class _KeepsNoEncoding(Deduper):
    packed_from = 10**9


_op = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 40), st.integers(0, 6 * HOUR_MS)),
    st.tuples(st.just("prune"), st.just(0), st.integers(0, 7 * HOUR_MS)),
    st.tuples(st.just("save"), st.just(0), st.just(0)),
    st.tuples(st.just("restore"), st.just(0), st.just(0)),
)


@given(st.lists(_op, max_size=80), st.integers(1, 30))
def test_kept_encodings_never_go_stale(ops: list[tuple[str, int, int]], cap: int) -> None:
    # the same adds, prunes (and cap drops) and restores: a deduper that keeps every hour's
    # encoding must save exactly what one that encodes afresh each time saves
    keeps: Deduper = _KeepsEveryEncoding(cap)
    fresh: Deduper = _KeepsNoEncoding(cap)
    for op, n, at in ops:
        if op == "add":
            keeps.add(f"e{n}", at)
            fresh.add(f"e{n}", at)
        elif op == "prune":
            keeps.prune(at)
            fresh.prune(at)
        elif op == "restore":
            keeps = _KeepsEveryEncoding.from_plain(cap, keeps.to_plain())
            fresh = _KeepsNoEncoding.from_plain(cap, fresh.to_plain())
        assert keeps.to_plain() == fresh.to_plain()
