"""A community's state in pages: a restore reads back exactly what the engine held, a save
writes only what changed since the last one, and a save cut short leaves the one before.

Pages are made tiny here (2 threads, 3 event ids, 2 settled answers) so that a few dozen
events page, fill, empty and delete pages; the worker's are 256 threads, 2,048 ids and
1,024 answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core import latency, state
from pipeline.core.engine import CommunityEngine
from pipeline.core.state import Write, page_key, state_key
from tests.core.corekit import HOUR, MIN, T0, engine, ev
from tests.core.test_thread_index import CONFIG, _indexes, _records, steps


@contextmanager
def page_sizes(threads: int, ids: int, answers: int = 2) -> Iterator[None]:
    saved = latency.THREADS_PER_PAGE, state.IDS_PER_PAGE, state.ANSWERS_PER_PAGE
    latency.THREADS_PER_PAGE, state.IDS_PER_PAGE, state.ANSWERS_PER_PAGE = threads, ids, answers
    try:
        yield
    finally:
        latency.THREADS_PER_PAGE, state.IDS_PER_PAGE, state.ANSWERS_PER_PAGE = saved


def _write(table: dict[bytes, bytes], writes: list[Write]) -> None:
    for key, record in writes:
        if record is None:
            table.pop(key, None)
        else:
            table[key] = record


def _doc(eng: CommunityEngine) -> dict[str, Any]:
    """The engine's whole state as data (thread order does not matter: a dict compares by keys)."""
    doc: dict[str, Any] = orjson.loads(eng.to_state())
    return doc


def _restore(table: dict[bytes, bytes], community: str = "c1") -> CommunityEngine:
    return CommunityEngine.from_state(table[state_key(community)], read=table.get)


def _named(table: dict[bytes, bytes], community: str = "c1") -> set[bytes]:
    """The keys the head names."""
    head = orjson.loads(table[state_key(community)])
    keys = {state_key(community)}
    for page, gen in head["thread_pages"]:
        keys.add(page_key(community, f"t{page}.{gen}"))
    for hour, gen, n in head["id_pages"]:
        keys |= {page_key(community, f"d{hour}.{gen}.{i}") for i in range(-(-n // state.IDS_PER_PAGE))}
    for day, gen, n in head["settled_pages"]:
        keys |= {page_key(community, f"s{day}.{gen}.{i}") for i in range(-(-n // state.ANSWERS_PER_PAGE))}
    return keys


# minutes apart, not hours: many event ids in one hour, so its ids fill pages too
dense = st.lists(
    st.tuples(
        st.sampled_from(["thread_started", "reply", "reply", "advance", "restore"]),
        st.integers(0, 12),
        st.integers(0, 3),
        st.integers(-3, 6),
    ),
    min_size=5,
    max_size=80,
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(steps, dense), st.lists(st.floats(0, 1), min_size=80, max_size=80))
def test_paged_saves_restore_exactly_and_a_save_cut_short_leaves_the_last_whole_one(
    plan: list[tuple[str, int, int, int]], cuts: list[float]
) -> None:
    with page_sizes(threads=2, ids=3):
        eng = engine(config=CONFIG)
        table: dict[bytes, bytes] = {}
        saved: dict[str, Any] | None = None  # the state the table holds
        paged = 0
        at = wall = T0
        for (kind, thread, actor, minutes), cut in zip(plan, cuts, strict=False):
            at += minutes * MIN
            wall = max(wall, at)
            if kind == "restore":
                writes = eng.state_writes()
                head = [key for key, _ in writes].index(state_key("c1"))
                # a crash part way: the table holds some of the writes, in order
                crashed = dict(table)
                _write(crashed, writes[: round(cut * len(writes))])
                if round(cut * len(writes)) > head:
                    assert _doc(_restore(crashed)) == _doc(eng)
                elif saved is not None:
                    assert _doc(_restore(crashed)) == saved
                _write(table, writes)
                saved = _doc(eng)
                paged += len(writes) > 1
                eng = _restore(table)
                assert _doc(eng) == saved
                assert set(table) == _named(table)
            elif kind == "advance":
                eng.advance(wall + max(minutes, 0) * MIN)
            else:
                eng.apply(ev(kind, f"a{actor}", at, thread=f"t{thread}"), wall)
            assert _indexes(eng.threads) == _records(eng.threads)


def _busy(threads: int, ids_per_thread: int) -> CommunityEngine:
    eng = engine()
    for n in range(threads):
        at = T0 + n * 100
        eng.apply(ev("thread_started", f"a{n % 50}", at, thread=f"t{n}"), at)
        for r in range(ids_per_thread - 1):
            eng.apply(ev("reply", f"b{r}", at + r + 1, thread=f"t{n}"), at + r + 1)
    eng.advance(T0 + threads * 100)
    return eng


def test_a_save_writes_only_the_pages_that_changed() -> None:
    eng = _busy(threads=1000, ids_per_thread=5)  # 4 thread pages of 256; 5,000 ids in one hour
    table: dict[bytes, bytes] = {}
    first = eng.state_writes()
    _write(table, first)
    hour = T0 - T0 % HOUR
    assert [key for key, _ in first] == [
        *(page_key("c1", f"t{p}.{p}") for p in range(3)),  # the 4th (232 threads) is filling: in the head
        *(page_key("c1", f"d{hour}.3.{i}") for i in range(3)),  # 2,048 + 2,048 + 904 ids
        state_key("c1"),
    ]
    assert [key for key, _ in eng.state_writes()] == [state_key("c1")]  # nothing changed
    # a reply to a thread of page 1: that page (under a new key), the hour's last page of ids,
    # the head, then the page's old key goes
    at = T0 + 1000 * 100
    eng.apply(ev("reply", "late-helper", at, thread="t300"), at)
    eng.advance(at)
    assert [(key, record is None) for key, record in eng.state_writes()] == [
        (page_key("c1", "t1.4"), False),
        (page_key("c1", f"d{hour}.3.2"), False),
        (state_key("c1"), False),
        (page_key("c1", "t1.1"), True),
    ]


def test_a_busy_community_saves_a_bounded_amount_while_its_state_grows() -> None:
    eng = engine()
    sizes = []
    for minute in range(30):
        for s in range(0, 60_000, 100):  # 10 events/s, a thread every 10th
            n = minute * 600 + s // 100
            at = T0 + minute * MIN + s
            thread = f"t{n}" if n % 10 == 0 else f"t{n - n % 10 - 10 * (n % 3)}"
            eng.apply(ev("thread_started" if n % 10 == 0 else "reply", f"u{n % 97}", at, thread=thread), at)
            if n % 50 == 0:
                eng.advance(at)
                written = sum(len(record or b"") for _, record in eng.state_writes())
        sizes.append(written)
    whole = len(eng.to_state())
    # the whole state kept growing (388 KB at the end); a save did not (16-46 KB)
    assert whole > 5 * max(sizes[20:])
    assert max(sizes[20:]) < 2 * max(sizes[:10])


def test_restores_keep_paging_where_the_last_save_left_it() -> None:
    eng = _busy(threads=600, ids_per_thread=4)
    table: dict[bytes, bytes] = {}
    _write(table, eng.state_writes())
    again = _restore(table)
    assert _doc(again) == _doc(eng)
    assert again.pages.thread_gens == eng.pages.thread_gens
    assert [key for key, _ in again.state_writes()] == [state_key("c1")]
    # a restored engine creates threads in the page still filling, as the saved one would have
    at = T0 + 600 * 100
    for e in (again, eng):
        e.apply(ev("thread_started", "new", at, thread="fresh"), at)
    assert again.threads.threads["fresh"].page == eng.threads.threads["fresh"].page == 600 // 256


def test_after_a_save_that_was_not_written_the_next_one_writes_everything_anew() -> None:
    with page_sizes(threads=4, ids=8, answers=3):
        eng = _busy(threads=40, ids_per_thread=3)
        table: dict[bytes, bytes] = {}
        _write(table, eng.state_writes())
        durable = _doc(eng)
        at = T0 + 40 * 100
        for n in range(12):  # replies to old threads and new ones: pages change
            eng.apply(ev("reply", "h", at + n, thread=f"t{n * 3}"), at + n)
            eng.apply(ev("thread_started", "a", at + n, thread=f"new{n}"), at + n)
        eng.advance(at + 20)
        eng.state_writes()  # never written (the step failed before)
        eng.pages.lost()
        again = eng.state_writes()
        # cut anywhere before its head, the table still restores the last written save
        head = [key for key, _ in again].index(state_key("c1"))
        for cut in range(head + 1):
            crashed = dict(table)
            _write(crashed, again[:cut])
            assert _doc(_restore(crashed)) == durable
        _write(table, again)
        assert _doc(_restore(table)) == _doc(eng)
        assert set(table) == _named(table)  # the old records are gone, nothing else is left


def test_a_page_the_head_names_but_the_table_lacks_is_a_clear_error() -> None:
    eng = _busy(threads=300, ids_per_thread=2)
    table: dict[bytes, bytes] = {}
    _write(table, eng.state_writes())
    del table[page_key("c1", "t0.0")]
    try:
        _restore(table)
    except state.StateError as exc:
        assert "'t0.0' is missing" in str(exc)
    else:
        raise AssertionError("restored without its page")


def test_a_state_written_before_pages_still_loads() -> None:
    eng = _busy(threads=300, ids_per_thread=3)
    doc = _doc(eng)
    assert not {"thread_pages", "id_pages", "settled_pages"} & set(doc)  # to_state() is one whole record
    old = {k: v for k, v in doc.items() if k != "seq"}
    old["format"] = 1
    again = CommunityEngine.from_state(orjson.dumps(old))
    assert {k: v for k, v in _doc(again).items() if k != "seq"} == {k: v for k, v in doc.items() if k != "seq"}
    assert again.threads.seq == 300  # its threads count as created, in the page now filling


def test_settled_answers_page_by_day_through_a_long_run() -> None:
    # 20 days, a thread every 2 hours answered 1-30 hours later by turns (as in
    # test_thread_index): answers settle hourly, 3 days after they were answered, and leave
    # after 7 days; saved every day with a crash part way through every third save
    with page_sizes(threads=4, ids=8, answers=6):  # some days page, some stay in the head
        eng = engine(config=CONFIG)
        table: dict[bytes, bytes] = {}
        paged_days = set()
        for n in range(240):
            start = T0 + n * 2 * HOUR
            eng.apply(ev("thread_started", "author", start, thread=f"t{n}"), start)
            if n >= 15 and n % 3:
                eng.apply(ev("reply", "helper", start + MIN, thread=f"t{n - 15}"), start + MIN)
            if n % 12 == 11:
                eng.advance(start + 2 * MIN)
                before = _doc(_restore(table)) if table else None
                writes = eng.state_writes()
                if n % 36 == 11 and before is not None:
                    crashed = dict(table)
                    _write(crashed, writes[: len(writes) // 2])  # the head is last but the deletions
                    assert _doc(_restore(crashed)) == before
                _write(table, writes)
                paged_days |= {day for day, _, _ in orjson.loads(table[state_key("c1")])["settled_pages"]}
                saved = _doc(eng)
                eng = _restore(table)
                assert _doc(eng) == saved
                assert _indexes(eng.threads) == _records(eng.threads)
                assert set(table) <= _named(table)
        assert len(paged_days) >= 5, paged_days  # days of settled answers went to pages (and left)
