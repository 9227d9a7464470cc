"""Health: rules on real engine scenarios, and hysteresis on the pure evaluator."""

from __future__ import annotations

import itertools
from dataclasses import replace

from corekit import DAY, HOUR, MIN, T0, Recorder, engine, ev
from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.health import HealthInputs, Verdict, evaluate
from pipeline.core.policy import CommunityPolicy
from pipeline.core.windows import DEFAULT_WINDOWS

IDLE = DEFAULT_WINDOWS.idle_after_ms
OPEN = CommunityPolicy("open")
TEAM = CommunityPolicy("team")


def feed(eng, events) -> Recorder:
    rec = Recorder()
    for e in sorted(events, key=lambda e: e.occurred_ms):
        rec.add(eng.apply(e, e.occurred_ms))
    return rec


# ---------------------------------------------------------------- dead


def test_silent_community_becomes_dead_via_advance_alone() -> None:
    eng = engine()
    rec = feed(eng, [ev("thread_started", "ann", T0, thread="t")])
    assert eng.health().state == "healthy"
    # stream time follows the wall clock minus the idle delay once nothing arrives
    rec.add(eng.advance(T0 + 14 * DAY + IDLE - 1))
    assert eng.health().state == "healthy"
    em = rec.add(eng.advance(T0 + 14 * DAY + IDLE))
    (snap,) = em.health
    assert snap.state == "dead" and snap.previous_state == "healthy" and "dead" in snap.flags
    assert snap.last_post_at is not None and snap.posts_7d == 0
    # nothing changes afterwards: no repeated snapshot
    assert rec.add(eng.advance(T0 + 20 * DAY)).health == []
    # a human post revives it
    e = ev("reply", "bob", T0 + 21 * DAY)
    em = eng.apply(e, T0 + 21 * DAY)
    assert [s.state for s in em.health] == ["healthy"] and em.health[0].previous_state == "dead"


def test_bot_posts_and_joins_do_not_keep_a_community_alive_nor_make_it_dead() -> None:
    eng = engine()
    feed(eng, [ev("reply", "ann", T0)])
    for day in range(1, 16):
        feed(eng, [ev("reply", "bot", T0 + day * DAY, actor_type="bot")])
    assert eng.health().state == "dead"
    joins_only = engine()
    feed(joins_only, [ev("member_joined", "ann", T0)])
    joins_only.advance(T0 + 60 * DAY)
    assert joins_only.health().state == "healthy"  # dead needs a last post
    assert joins_only.health().last_post_at is None


# ---------------------------------------------------------------- dying


def _steady(days: range, per_day: int, actors=("ann", "bob", "cid", "dee")) -> list:
    out = []
    for d in days:
        for i in range(per_day):
            out.append(ev("reply", actors[(d + i) % len(actors)], T0 + d * DAY + (i + 1) * HOUR))
    return out


def test_dying_when_last_week_falls_below_half_of_the_four_weeks_before() -> None:
    eng = engine()
    feed(eng, _steady(range(28), 3))  # 21 posts/week
    eng.advance(T0 + 28 * DAY)
    assert eng.health().state == "healthy"
    rec = feed(eng, _steady(range(28, 35), 1))  # 7 posts in the last 7 days
    rec.add(eng.advance(T0 + 34 * DAY + 23 * HOUR))
    snap = eng.health()
    assert snap.baseline_posts_per_week == 21.0 and snap.posts_7d == 7
    assert snap.state == "dying" and "dying" in snap.flags
    assert [s.state for s in rec.health][-1] == "dying"


def test_no_dying_below_the_minimum_baseline() -> None:
    eng = engine()
    feed(eng, _steady(range(28), 1))  # 7 posts/week < 10
    eng.advance(T0 + 34 * DAY + 23 * HOUR)
    assert eng.health().baseline_posts_per_week == 7.0
    assert "dying" not in eng.health().flags


# ---------------------------------------------------------------- one poster


def _shares(main: int, other: int) -> list:
    events = [ev("reply", "ann", T0 + i * HOUR) for i in range(main)]
    events += [ev("reply", f"m{i}", T0 + (main + i) * HOUR) for i in range(other)]
    return events


def test_one_poster_open_vs_team() -> None:
    # 7 of 10 posts by one member: a team is one_poster (>= 0.6), an open forum is not (< 0.9)
    for policy, expected in ((OPEN, "healthy"), (TEAM, "one_poster")):
        eng = engine(policy)
        feed(eng, _shares(7, 3))
        eng.advance(T0 + DAY)
        assert eng.health().top1_share_28d == 0.7
        assert eng.health().state == expected, policy
    eng = engine(OPEN)
    feed(eng, _shares(19, 1))
    eng.advance(T0 + DAY)
    assert eng.health().state == "one_poster" and eng.health().community_type == "open"


def test_one_poster_needs_enough_posts() -> None:
    eng = engine(TEAM)
    feed(eng, _shares(9, 0))
    eng.advance(T0 + DAY)
    assert eng.health().state == "healthy"


def test_thresholds_are_overridable_per_community() -> None:
    strict = CommunityPolicy("open", OPEN.thresholds.with_overrides({"one_poster_share_open": 0.5}))
    eng = engine(strict)
    feed(eng, _shares(7, 3))
    eng.advance(T0 + DAY)
    assert eng.health().state == "one_poster"


# ---------------------------------------------------------------- responsiveness


def _threads(n: int, latency_ms: int | None, start_day: int = 0) -> list:
    out = []
    for i in range(n):
        at = T0 + start_day * DAY + i * DAY // 2 + HOUR
        tid = f"q{start_day}-{i}"
        out.append(ev("thread_started", f"asker{i}", at, thread=tid))
        if latency_ms is not None:
            out.append(ev("reply", "helper", at + latency_ms, thread=tid))
    return out


def test_on_demand_when_answered_fast() -> None:
    eng = engine()
    feed(eng, _threads(10, 10 * MIN))
    eng.advance(T0 + 6 * DAY)
    snap = eng.health()
    assert snap.responsiveness == "on_demand" and "when_we_can" not in snap.flags
    assert snap.first_response_p50_7d_s == 600 and snap.answered_within_sla_7d == 1.0


def test_when_we_can_when_answered_slowly() -> None:
    eng = engine()
    feed(eng, _threads(10, 3 * HOUR))
    eng.advance(T0 + 6 * DAY)
    snap = eng.health()
    assert snap.responsiveness == "when_we_can" and "when_we_can" in snap.flags
    assert snap.first_response_p50_7d_s == 3 * 3600


def test_when_we_can_when_too_many_threads_wait_past_the_sla() -> None:
    eng = engine()
    # 6 answered in 5 min, then 4 never answered (all > 24 h old at evaluation)
    feed(eng, _threads(6, 5 * MIN) + _threads(4, None, start_day=3))
    eng.advance(T0 + 6 * DAY)
    snap = eng.health()
    assert snap.first_response_p50_7d_s == 300 and snap.answered_within_sla_7d == 0.6
    assert snap.responsiveness == "when_we_can"


def test_no_demand_without_threads() -> None:
    eng = engine()
    feed(eng, [ev("reply", "ann", T0 + HOUR, thread="old"), ev("reaction", "bob", T0 + 2 * HOUR)])
    eng.advance(T0 + DAY)
    assert eng.health().responsiveness == "no_demand"


# ---------------------------------------------------------------- backlog


def test_unanswered_backlog_after_the_sla_and_only_non_author_humans_answer() -> None:
    eng = engine()
    feed(
        eng,
        [
            ev("thread_started", "ann", T0, thread="t"),
            ev("reply", "ann", T0 + HOUR, thread="t"),  # the author
            ev("reply", "bot", T0 + 2 * HOUR, thread="t", actor_type="bot"),
        ],
    )
    eng.advance(T0 + 2 * HOUR + DAY - 2 * HOUR + IDLE - 1)  # stream time < start + 24 h
    assert "unanswered_backlog" not in eng.health().flags
    em = eng.advance(T0 + DAY + 2 * HOUR + IDLE)
    assert "unanswered_backlog" in eng.health().flags and em.health
    assert eng.health().unanswered_threads == 1
    e = ev("reply", "bob", T0 + DAY + 3 * HOUR, thread="t")
    em = eng.apply(e, e.occurred_ms)
    assert "unanswered_backlog" not in eng.health().flags
    assert em.first_responses[0].responder_id == "bob"


# ---------------------------------------------------------------- hysteresis (pure)

BASE = HealthInputs(
    silence_s=60.0,
    posts_7d=20,
    baseline_posts_per_week=20.0,
    posts_28d=80,
    top1_share_28d=0.2,
    threads_started_7d=0,
    first_response_p50_7d_s=None,
    answered_within_sla_7d=None,
    backlog_threads=0,
)


def states(inputs: list[HealthInputs], policy: CommunityPolicy = OPEN) -> list[Verdict]:
    out: list[Verdict] = []
    previous = None
    for i in inputs:
        previous = evaluate(i, policy, previous)
        out.append(previous)
    return out


def test_dying_margin() -> None:
    seq = [replace(BASE, posts_7d=p) for p in (12, 9, 11, 11, 12, 11, 9)]
    assert [v.state for v in states(seq)] == [
        "healthy",
        "dying",  # 9 < 10
        "dying",  # 11 < 12 (exit needs >= 0.6 x 20)
        "dying",
        "healthy",  # 12 >= 12
        "healthy",  # 11 is not < 10: no re-entry
        "dying",
    ]


def test_one_poster_margin_open_and_team() -> None:
    shares = (0.85, 0.9, 0.85, 0.81, 0.79, 0.85)
    seq = [replace(BASE, top1_share_28d=s) for s in shares]
    assert [v.state for v in states(seq, OPEN)] == [
        "healthy",
        "one_poster",
        "one_poster",
        "one_poster",
        "healthy",
        "healthy",
    ]
    team = [replace(BASE, top1_share_28d=s) for s in (0.55, 0.6, 0.51, 0.49)]
    assert [v.state for v in states(team, TEAM)] == ["healthy", "one_poster", "one_poster", "healthy"]


def test_on_demand_margin() -> None:
    def r(p50: float, share: float) -> HealthInputs:
        return replace(BASE, threads_started_7d=5, first_response_p50_7d_s=p50, answered_within_sla_7d=share)

    seq = [r(3700, 0.9), r(3500, 0.9), r(5000, 0.75), r(5000, 0.69), r(3500, 0.79), r(3500, 0.8)]
    assert [v.responsiveness for v in states(seq)] == [
        "when_we_can",
        "on_demand",
        "on_demand",
        "when_we_can",
        "when_we_can",
        "on_demand",
    ]


@given(st.lists(st.floats(min_value=-0.04, max_value=0.04), min_size=2, max_size=30))
def test_a_community_on_a_threshold_does_not_flap(jitter: list[float]) -> None:
    """Signals wobbling within +-0.04 around an entry threshold change state at most once."""
    one_poster = [replace(BASE, top1_share_28d=0.9 + j) for j in jitter]
    dying = [replace(BASE, posts_7d=round(20 * (0.5 + j))) for j in jitter]
    for seq in (one_poster, dying):
        verdicts = states(seq)
        changes = sum(1 for a, b in itertools.pairwise(verdicts) if a.state != b.state)
        assert changes <= 1


def test_priority_and_flags() -> None:
    v = evaluate(
        replace(
            BASE,
            silence_s=15 * 86400.0,
            posts_7d=0,
            top1_share_28d=1.0,
            threads_started_7d=2,
            backlog_threads=2,
        ),
        OPEN,
        None,
    )
    assert v.state == "dead"
    assert set(v.flags) == {"dead", "dying", "one_poster", "when_we_can", "unanswered_backlog"}


# ---------------------------------------------------------------- snapshots


def test_figures_refresh_the_snapshot_at_most_once_per_refresh_interval() -> None:
    refresh = DEFAULT_WINDOWS.health_refresh_ms
    eng = engine()
    first = feed(eng, [ev("reply", "ann", T0)]).health
    assert [s.posts_7d for s in first] == [1]  # the first evaluation is always emitted
    # more posts, same state: nothing until refresh_ms of stream time has passed
    quiet = feed(eng, [ev("reply", "bob", T0 + i * MIN) for i in range(1, 9)]).health
    assert quiet == []
    (refreshed,) = feed(eng, [ev("reply", "cid", T0 + refresh)]).health
    assert refreshed.state == first[0].state == "healthy" and refreshed.previous_state == "healthy"
    assert refreshed.posts_7d == 10 and refreshed.active_members_7d == 3
    assert refreshed.version == first[0].version + 1
    # unchanged figures are never re-emitted, however much time passes (ages are not figures)
    assert eng.advance(T0 + refresh + IDLE + 1).health == []
    assert eng.health().posts_7d == 10


def test_figure_refresh_survives_a_state_round_trip() -> None:
    from pipeline.core.engine import CommunityEngine

    eng = engine()
    feed(eng, [ev("reply", "ann", T0)])
    again = CommunityEngine.from_state(eng.to_state(), eng.policy)
    assert again.emitted_figures == eng.emitted_figures and again.emitted_at_ms == eng.emitted_at_ms
    assert feed(again, [ev("reply", "bob", T0 + MIN)]).health == []
