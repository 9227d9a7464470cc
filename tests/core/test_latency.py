"""First-response candidates and percentiles against brute force, in any arrival order."""

from __future__ import annotations

import math
import statistics

from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.latency import Thread, percentile

actors = st.sampled_from(["a", "b", "c", "d"])
responses_st = st.lists(st.tuples(actors, st.integers(min_value=0, max_value=20)), max_size=10)


def brute_first(author: str, responses: list[tuple[str, int]]) -> tuple[str, int] | None:
    eligible = sorted((t, a) for a, t in responses if a != author)
    return (eligible[0][1], eligible[0][0]) if eligible else None


@given(actors, responses_st, st.randoms(use_true_random=False), st.integers(0, 10))
def test_first_response_is_the_earliest_non_author_reply_in_any_order(
    author: str, responses: list[tuple[str, int]], rnd, start_at: int
) -> None:
    shuffled = list(responses)
    rnd.shuffle(shuffled)
    thread = Thread()
    # the thread's start may arrive anywhere among its replies
    position = min(start_at, len(shuffled))
    for i, (actor, at) in enumerate(shuffled):
        if i == position:
            thread.set_start(author, 0)
        thread.add_response(actor, at)
    if position >= len(shuffled):
        thread.set_start(author, 0)
    assert thread.first_response() == brute_first(author, responses)


starts_st = st.lists(st.tuples(actors, st.integers(min_value=0, max_value=20)), min_size=1, max_size=2)
early_responses_st = st.lists(st.tuples(actors, st.integers(min_value=-10, max_value=30)), max_size=10)


@given(
    starts_st,
    early_responses_st,
    st.randoms(use_true_random=False),
    st.one_of(st.none(), st.integers(min_value=0, max_value=12)),
)
def test_replies_before_the_start_answer_it_within_the_tolerance_in_any_order(
    starts: list[tuple[str, int]], responses: list[tuple[str, int]], rnd, early: int | None
) -> None:
    """Any arrival order of replies and of (one or two reports of) the start gives the brute
    force answer: the earliest reply by a non-author at most ``early`` before the earliest start."""
    calls = [("start", a, t) for a, t in starts] + [("reply", a, t) for a, t in responses]
    rnd.shuffle(calls)
    thread = Thread()
    for what, actor, at in calls:
        if what == "start":
            thread.set_start(actor, at, early)
        else:
            thread.add_response(actor, at, early)
    start, author = min((t, a) for a, t in starts)
    eligible = [(a, t) for a, t in responses if early is None or t >= start - early]
    expected = brute_first(author, eligible)
    assert thread.first_response() == expected
    assert thread.answered_at() == (None if expected is None else max(expected[1], start))


def test_a_too_early_reply_does_not_hide_the_replies_after_it() -> None:
    # all replies arrive before the start: the too-early one must not take a candidate's place
    thread = Thread()
    for actor, at in (("bob", -50), ("ann", 1), ("carol", 2)):
        thread.add_response(actor, at, 10)
    thread.set_start("ann", 0, 10)
    assert thread.first_response() == ("carol", 2)
    assert thread.held == [(-50, "bob")]
    # a second, earlier report of the start admits it
    thread.set_start("ann", -55, 10)
    assert thread.first_response() == ("bob", -50) and thread.answered_at() == -50 and thread.held == []


def test_an_early_reply_answers_at_the_start() -> None:
    thread = Thread()
    thread.add_response("bob", 95, 10)
    thread.set_start("ann", 100, 10)
    assert thread.first_response() == ("bob", 95)
    assert thread.answered_at() == 100


def test_author_replies_do_not_answer_their_own_thread() -> None:
    thread = Thread()
    thread.set_start("alice", 0)
    thread.add_response("alice", 5)
    assert thread.first_response() is None
    thread.add_response("bob", 9)
    assert thread.first_response() == ("bob", 9)


def test_unknown_author_has_no_first_response_yet() -> None:
    thread = Thread()
    thread.add_response("bob", 3)
    assert thread.first_response() is None
    thread.set_start("bob", 1)
    assert thread.first_response() is None
    thread.add_response("carol", 4)
    assert thread.first_response() == ("carol", 4)


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=2, max_size=40))
def test_percentiles_match_statistics_inclusive_quantiles(values: list[float]) -> None:
    deciles = statistics.quantiles(values, n=10, method="inclusive")
    p50 = percentile(values, 0.5)
    p90 = percentile(values, 0.9)
    assert p50 is not None and p90 is not None
    assert math.isclose(p50, statistics.median(values), rel_tol=1e-9, abs_tol=1e-6)
    assert math.isclose(p90, deciles[8], rel_tol=1e-9, abs_tol=1e-6)
    assert min(values) <= p50 <= p90 <= max(values)


def test_percentile_edges() -> None:
    assert percentile([], 0.5) is None
    assert percentile([7.0], 0.9) == 7.0
