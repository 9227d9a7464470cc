"""The sink's pure policies: when to flush, how to back off, what to commit, what was refused."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.storage.batching import (
    Backoff,
    Batch,
    BatchPolicy,
    DeadLetter,
    Source,
    describe_error,
    insert_isolating,
)


def src(offset: int, partition: int = 0, topic: str = "t", value: bytes = b"x") -> Source:
    return Source(topic, partition, offset, None, value)


# ---------------------------------------------------------------- policy


def test_empty_batch_is_never_due() -> None:
    policy = BatchPolicy(max_rows=1, max_bytes=1, max_age_s=0.001)
    assert not policy.due(0, 0, None, 1e9)


@given(
    rows=st.integers(1, 50),
    nbytes=st.integers(0, 5000),
    age=st.floats(0, 10, allow_nan=False),
    max_rows=st.integers(1, 50),
    max_bytes=st.integers(1, 5000),
    max_age=st.floats(0.01, 10, allow_nan=False),
)
def test_due_exactly_when_a_limit_is_reached(
    rows: int, nbytes: int, age: float, max_rows: int, max_bytes: int, max_age: float
) -> None:
    policy = BatchPolicy(max_rows=max_rows, max_bytes=max_bytes, max_age_s=max_age)
    expected = rows >= max_rows or nbytes >= max_bytes or age >= max_age
    assert policy.due(rows, nbytes, 0.0, age) == expected


@given(rows=st.integers(0, 100), max_rows=st.integers(1, 100))
def test_room_never_lets_a_batch_exceed_max_rows(rows: int, max_rows: int) -> None:
    policy = BatchPolicy(max_rows=max_rows)
    room = policy.room(rows)
    assert room >= 0
    if rows <= max_rows:
        assert rows + room == max_rows


@given(elapsed=st.floats(0, 5, allow_nan=False), idle=st.floats(0.01, 2, allow_nan=False))
def test_poll_wait_never_overruns_the_batch_age(elapsed: float, idle: float) -> None:
    policy = BatchPolicy(max_age_s=1.0)
    wait = policy.wait(1, 10.0, 10.0 + elapsed, idle)
    assert 0 <= wait <= idle
    assert elapsed + wait <= max(1.0, elapsed) + 1e-9
    assert policy.wait(0, None, 10.0, idle) == idle


def test_policy_refuses_non_positive_limits() -> None:
    for kwargs in ({"max_rows": 0}, {"max_bytes": 0}, {"max_age_s": 0.0}):
        with pytest.raises(ValueError):
            BatchPolicy(**kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------- backoff


@given(attempt=st.integers(1, 200))
def test_backoff_grows_and_is_capped(attempt: int) -> None:
    b = Backoff(initial_s=0.1, factor=2.0, max_s=5.0)
    assert 0 < b.delay(attempt) <= 5.0
    assert b.delay(attempt + 1) >= b.delay(attempt)
    assert b.delay(0) == 0.0


# ---------------------------------------------------------------- batch


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1000)), min_size=1, max_size=60))
def test_next_offsets_are_one_past_the_highest_seen(messages: list[tuple[int, int]]) -> None:
    batch: Batch[int] = Batch()
    for i, (partition, offset) in enumerate(messages):
        if i % 5 == 4:
            batch.add_dead(DeadLetter(src(offset, partition), "decode", "bad"), now=1.0)
        else:
            batch.add_row("tbl", offset, src(offset, partition), now=1.0)
    expected: dict[tuple[str, int], int] = {}
    for partition, offset in messages:
        expected[("t", partition)] = max(expected.get(("t", partition), 0), offset + 1)
    assert batch.next_offsets == expected
    assert batch.count == len(messages)
    assert batch.nbytes == len(messages)
    assert batch.opened_at == 1.0


@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=40, unique=True), st.randoms())
def test_token_depends_on_the_messages_not_their_order(offsets: list[int], rnd: object) -> None:
    a: Batch[int] = Batch()
    b: Batch[int] = Batch()
    for o in offsets:
        a.add_row("tbl", o, src(o), 0.0)
    shuffled = list(offsets)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    for o in shuffled:
        b.add_row("tbl", o, src(o), 0.0)
    assert a.token("tbl") == b.token("tbl")
    c: Batch[int] = Batch()
    for o in offsets:
        c.add_row("tbl", o, src(o + 1), 0.0)
    assert c.token("tbl") != a.token("tbl")
    assert a.token("tbl") != a.token("other")
    d: Batch[int] = Batch()
    for o in offsets:
        d.add_row("tbl", o, src(o, value=b"y"), 0.0)
    assert d.token("tbl") != a.token("tbl")  # same offsets, other content (a recreated topic)


# ---------------------------------------------------------------- isolating refused rows


class Refused(ValueError):
    pass


class Down(RuntimeError):
    pass


@given(
    n=st.integers(0, 64),
    bad=st.sets(st.integers(0, 63), max_size=10),
)
def test_isolating_returns_exactly_the_refused_rows_and_stores_the_rest_once(
    n: int, bad: set[int]
) -> None:
    rows = list(range(n))
    bad = {b for b in bad if b < n}
    stored: list[int] = []
    tokens: list[str] = []

    def insert(part: Sequence[int], token: str) -> None:
        if any(r in bad for r in part):
            raise Refused(f"row {min(r for r in part if r in bad)} violates a constraint")
        stored.extend(part)
        tokens.append(token)

    refused = insert_isolating(insert, rows, "tok", lambda e: isinstance(e, Refused))
    assert sorted(i for i, _ in refused) == sorted(bad)
    assert sorted(stored) == [r for r in rows if r not in bad]
    assert len(tokens) == len(set(tokens))  # every stored part has its own token
    for index, reason in refused:
        assert f"row {index}" in reason


def test_isolating_lets_an_outage_through_without_splitting() -> None:
    calls: list[int] = []

    def insert(part: Sequence[int], token: str) -> None:
        calls.append(len(part))
        raise Down("connection refused")

    with pytest.raises(Down):
        insert_isolating(insert, [1, 2, 3, 4], "tok", lambda e: isinstance(e, Refused))
    assert calls == [4]


def test_describe_error_keeps_the_clickhouse_sentence_and_drops_the_trailer() -> None:
    exc = RuntimeError(
        "Code: 469. DB::Exception: Constraint `window_ordered` is violated at row 1. "
        "(VIOLATED_CONSTRAINT) (version 26.9.2.1 (official build)) Stack trace: 0. foo"
    )
    text = describe_error(exc)
    assert text.startswith("RuntimeError: Code: 469.")
    assert "VIOLATED_CONSTRAINT" in text
    assert "Stack trace" not in text and "version 26" not in text
