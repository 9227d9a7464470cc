"""What the engine keeps: pruning as stream time advances, coalesced emission, bad state."""

from __future__ import annotations

import json

import pytest
from corekit import DAY, HOUR, MIN, T0, engine, ev

from pipeline.core.engine import CommunityEngine
from pipeline.core.state import StateError
from pipeline.core.windows import WindowsConfig


def _busy_day(eng: CommunityEngine, day: int, n: int = 40) -> None:
    for i in range(n):
        at = T0 + day * DAY + i * 30 * MIN
        if i % 4 == 0:
            e = ev("thread_started", f"u{i % 7}", at, thread=f"d{day}-{i}")
        else:
            e = ev("reply", f"u{(i + day) % 9}", at, thread=f"d{day}-{i - i % 4}")
        eng.apply(e, at)


def test_state_is_pruned_as_stream_time_advances() -> None:
    eng = engine()
    for day in range(40):
        _busy_day(eng, day)
    assert len(eng.buckets["1h"]) <= 26  # max_lateness (24 h) + the current hour + margin
    assert len(eng.buckets["1d"]) <= 36  # the 4 weeks before the last 7 days
    assert all(b.compacted for s, b in eng.buckets["1d"].items() if s < T0 + 40 * DAY - 29 * DAY)
    assert len(eng.dedupe) <= 40 * 2  # about a day and a bit of event ids
    busy = len(eng.to_state())
    eng.advance(T0 + 140 * DAY)
    quiet = eng.to_state()
    doc = json.loads(quiet)
    assert doc["hours"] == [] and doc["days"] == [] and doc["dedupe"] == {}
    assert doc["threads"] == {} and doc["members"] == {}  # 90 d member memory has passed
    assert len(quiet) < busy / 4
    assert eng.health().state == "dead"  # the last post is remembered without any bucket


def test_deferred_emission_coalesces_rows_until_advance() -> None:
    eng = engine(config=WindowsConfig(emit_on_apply=False))
    # the first event of a stream hour computes the changed rows before that hour's prune
    # (which may forget threads they need); advance() hands them out
    assert eng.apply(ev("reply", "u0", T0), T0).windows == []
    assert sorted((w.window, w.version, w.posts) for w in eng.advance(T0).windows) == [("1d", 1, 1), ("1h", 1, 1)]
    for i in range(1, 10):
        em = eng.apply(ev("reply", f"u{i}", T0 + i * MIN), T0 + i * MIN)
        assert em.windows == []
    em = eng.advance(T0 + 10 * MIN)
    assert sorted((w.window, w.version, w.posts) for w in em.windows) == [("1d", 2, 10), ("1h", 2, 10)]
    # dirty windows survive a round trip through the state
    eng.apply(ev("reply", "late", T0 + 11 * MIN), T0 + 11 * MIN)
    again = CommunityEngine.from_state(eng.to_state(), eng.policy)
    rows = again.advance(T0 + 12 * MIN).windows
    assert sorted((w.window, w.version, w.posts) for w in rows) == [("1d", 3, 11), ("1h", 3, 11)]


def test_idle_engine_emits_finals_once() -> None:
    eng = engine()
    eng.apply(ev("reply", "a", T0), T0)
    first = eng.advance(T0 + 2 * DAY)
    assert sorted((w.window, w.final) for w in first.windows) == [("1d", True), ("1h", True)]
    assert eng.advance(T0 + 3 * DAY).windows == []


def test_unreadable_state_is_refused() -> None:
    with pytest.raises(StateError):
        CommunityEngine.from_state(b"not json", engine().policy)
    with pytest.raises(StateError):
        CommunityEngine.from_state(b'{"format": 999}', engine().policy)


def test_policy_comes_from_the_caller_not_the_state() -> None:
    from pipeline.core.policy import CommunityPolicy

    eng = engine()
    eng.apply(ev("reply", "a", T0 + HOUR), T0 + HOUR)
    team = CommunityEngine.from_state(eng.to_state(), CommunityPolicy("team"))
    assert team.policy.community_type == "team"


def test_settled_threads_keep_the_7_day_views_and_survive_a_round_trip() -> None:
    # answered threads that no window row can need any more are kept as (start, response)
    # for the 7 d health views only; the views must not notice, nor a restart
    eng = engine(config=WindowsConfig(emit_on_apply=False))
    for day in range(12):
        _busy_day(eng, day)
        eng.advance(T0 + day * DAY + 23 * HOUR)
    assert eng.threads.settled
    assert all(tid not in eng.threads.threads for tid in ("d0-0", "d5-0"))
    now = eng.stream_time_ms
    assert now is not None
    since = now - 7 * DAY + 1
    sla_ms = eng.policy.thresholds.sla_s * 1000
    view = eng.threads.seven_days(since, now, sla_ms)
    # every thread of the 7 d view: started in the last 7 days, each answered (a reply follows it)
    assert view.started == sum(1 for d in range(12) for i in range(0, 40, 4) if T0 + d * DAY + i * 30 * MIN >= since)
    assert len(view.latencies_ms) == view.started
    again = CommunityEngine.from_state(eng.to_state(), eng.policy)
    assert again.threads.seven_days(since, now, sla_ms) == view
    later = T0 + 13 * DAY
    assert again.advance(later).health == eng.advance(later).health
    assert again.health() == eng.health()


def test_held_replies_survive_a_round_trip_and_are_forgotten_after_twice_max_lateness() -> None:
    eng = engine()
    eng.apply(ev("reply", "bob", T0, thread="t1"), T0)  # its thread's start is not known
    eng.apply(ev("reply", "cid", T0 + 2 * HOUR, thread="t1"), T0 + 2 * HOUR)
    doc = json.loads(eng.to_state())
    assert doc["threads"]["t1"][10] == [[T0, "bob"], [T0 + 2 * HOUR, "cid"]]
    again = CommunityEngine.from_state(eng.to_state(), eng.policy)
    assert again.to_state() == eng.to_state()
    assert again.threads.threads["t1"].held == [(T0, "bob"), (T0 + 2 * HOUR, "cid")]
    # no start that can still arrive admits a reply more than 2 x max_lateness old (the idle
    # clock follows the wall clock minus 10 min)
    eng.advance(T0 + 2 * DAY + HOUR + 10 * MIN)
    assert eng.threads.threads["t1"].held == [(T0 + 2 * HOUR, "cid")]
    eng.advance(T0 + 2 * DAY + 3 * HOUR + 10 * MIN)
    assert "t1" not in eng.threads.threads and not eng.threads.orphans


def test_a_state_written_before_replies_were_held_is_read() -> None:
    # an orphan's replies used to be its two candidates (and no held list was written)
    eng = engine()
    eng.apply(ev("reply", "bob", T0, thread="t1"), T0)
    doc = json.loads(eng.to_state())
    doc["threads"]["t1"] = [None, None, "bob", T0, "cid", T0 + MIN, 0, None, None, None]
    old = CommunityEngine.from_state(json.dumps(doc).encode(), eng.policy)
    thread = old.threads.threads["t1"]
    assert thread.held == [(T0, "bob"), (T0 + MIN, "cid")] and thread.c1_actor is None
    old.apply(ev("thread_started", "bob", T0 + 2 * MIN, thread="t1"), T0 + 2 * MIN)
    assert thread.first_response() == ("cid", T0 + MIN)
