"""The simulator's requests verify, adapt, and show the behaviour they were asked for."""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import Secret
from pipeline.events import CanonicalEvent
from pipeline.gateway import signatures
from pipeline.gateway.adapters import Delivery, adapt, adapt_generic
from pipeline.simulate.behaviours import BEHAVIOURS
from pipeline.simulate.generate import PLATFORMS, Spec, generate, plan
from pipeline.simulate.model import Request
from pipeline.simulate.render import DISCOURSE_INSTANCE, Credentials, resign_slack

GITHUB, DISCOURSE, SLACK, TOKEN = "gh-secret-" + "x" * 10, "dc-secret-" + "y" * 10, "sl-secret-" + "z" * 10, "t" * 32
CREDS = Credentials(github=GITHUB, discourse=lambda instance: DISCOURSE, slack=SLACK, ingest=("tester", TOKEN))
END = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SIGNED_AT = 1_800_000_000.0
DAY = timedelta(days=1)


def _lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def verify(request: Request, now: float = SIGNED_AT) -> None:
    headers = _lower(request.headers)
    if request.platform == "github":
        signatures.verify_github(Secret(GITHUB), headers, request.body)
    elif request.platform == "discourse":
        signatures.verify_discourse(Secret(DISCOURSE), headers, request.body)
    elif request.platform == "slack":
        signatures.verify_slack(Secret(SLACK), headers, request.body, now=now)
    else:
        assert headers["authorization"] == f"Bearer {TOKEN}"


def to_events(request: Request, received: datetime = END) -> list[CanonicalEvent]:
    headers = _lower(request.headers)
    if request.platform == "generic":
        return adapt_generic(request.body, headers["content-type"], "tester", received)
    assert request.path == f"/webhooks/{request.platform}"
    return list(adapt(Delivery(request.platform, headers, request.body, received)).events)


@cache
def simulated(days: float = 42, seed: int = 7) -> tuple[tuple[Request, ...], dict[str, list[CanonicalEvent]]]:
    spec = Spec(len(PLATFORMS) * len(BEHAVIOURS), BEHAVIOURS, PLATFORMS, days, END, seed)
    requests = generate(spec, CREDS, SIGNED_AT)
    by_behaviour: dict[str, list[CanonicalEvent]] = defaultdict(list)
    for request in requests:
        by_behaviour[request.meta["behaviour"] + "@" + request.platform] += to_events(request)
    return tuple(requests), dict(by_behaviour)


def _communities(behaviour: str) -> dict[str, list[CanonicalEvent]]:
    """community id -> its events, over every platform simulating ``behaviour``."""
    _, groups = simulated()
    found: dict[str, list[CanonicalEvent]] = defaultdict(list)
    for key, events in groups.items():
        if key.startswith(behaviour + "@"):
            for event in events:
                found[event.community_id].append(event)
    # Discourse joins are site-wide, not part of the category community
    return {cid: evs for cid, evs in found.items() if any(e.is_post for e in evs)}


def _human_posts(events: list[CanonicalEvent], since: datetime, until: datetime = END) -> list[CanonicalEvent]:
    return [e for e in events if e.is_post and e.is_human and since <= e.occurred_at < until]


def _first_responses(events: list[CanonicalEvent]) -> tuple[list[float], int]:
    """Seconds to the first human response by someone else, per answered thread; and thread count."""
    starts = {e.thread_id: e for e in events if e.kind == "thread_started" and e.is_human}
    first: dict[str, float] = {}
    for e in sorted(events, key=lambda e: e.occurred_at):
        start = starts.get(e.thread_id)
        if e.kind == "reply" and e.is_human and start and e.actor_id != start.actor_id and e.thread_id not in first:
            first[e.thread_id] = (e.occurred_at - start.occurred_at).total_seconds()  # type: ignore[index]
    return list(first.values()), len(starts)


# --------------------------------------------------------------- the requests


def test_every_request_verifies_and_adapts() -> None:
    requests, _ = simulated()
    seen = Counter()
    for request in requests:
        verify(request)
        seen[request.platform] += 1
        events = to_events(request)
        for event in events:
            assert event.occurred_at <= END
    assert set(seen) == set(PLATFORMS)


def test_requests_are_in_event_time_order_and_reproducible() -> None:
    requests, _ = simulated()
    times = [r.occurred_at for r in requests]
    assert times == sorted(times)  # type: ignore[type-var]
    spec = Spec(6, BEHAVIOURS, ("slack", "discourse"), 10, END, 3)
    assert generate(spec, CREDS, SIGNED_AT) == generate(spec, CREDS, SIGNED_AT)
    assert generate(spec, CREDS, SIGNED_AT) != generate(
        Spec(6, BEHAVIOURS, ("slack", "discourse"), 10, END, 4), CREDS, SIGNED_AT
    )


def test_slack_is_signed_now_whatever_the_event_time() -> None:
    requests, _ = simulated()
    slack = [r for r in requests if r.platform == "slack"]
    assert slack
    old = min(slack, key=lambda r: r.occurred_at)  # type: ignore[arg-type,return-value]
    assert old.occurred_at < END - 30 * DAY  # type: ignore[operator]
    verify(old, now=SIGNED_AT)
    later = SIGNED_AT + 3600
    with pytest.raises(signatures.SignatureError, match="5-minute window"):
        verify(old, now=later)
    verify(resign_slack(old, SLACK, later), now=later)


@given(
    st.lists(st.sampled_from(BEHAVIOURS), min_size=1, unique=True),
    st.lists(st.sampled_from(PLATFORMS), min_size=1, unique=True),
)
def test_every_platform_and_behaviour_pair_is_planned(behaviours: list[str], platforms: list[str]) -> None:
    spec = Spec(len(platforms) * len(behaviours), tuple(behaviours), tuple(platforms), 1, END)
    assert {(c.platform, c.behaviour) for c in plan(spec)} == {(p, b) for p in platforms for b in behaviours}


def test_deliveries_look_like_the_platforms() -> None:
    requests, _ = simulated()
    events = Counter()
    for request in requests:
        headers = _lower(request.headers)
        if request.platform == "github":
            events["github:" + headers["x-github-event"]] += 1
            assert len(headers["x-github-delivery"]) == 36
        elif request.platform == "discourse":
            events["discourse:" + headers["x-discourse-event"]] += 1
            assert headers["x-discourse-instance"] == DISCOURSE_INSTANCE
            assert next(iter(json.loads(request.body))) == headers["x-discourse-event-type"]
        elif request.platform == "slack":
            body = json.loads(request.body)
            events["slack:" + body["event"]["type"] + ":" + body["event"].get("subtype", "")] += 1
    for expected in (
        "github:discussion", "github:discussion_comment", "github:issues", "github:issue_comment",
        "discourse:post_created", "discourse:topic_created", "discourse:user_created",
        "slack:message:", "slack:message:channel_join", "slack:member_joined_channel:", "slack:reaction_added:",
    ):  # fmt: skip
        assert events[expected] > 0, expected


def test_each_action_has_one_event_id() -> None:
    _, groups = simulated()
    for key, events in groups.items():
        counts = Counter(e.event_id for e in events)
        for event in events:
            if key.endswith("@slack") and event.kind in ("member_joined", "member_left"):
                # the channel_join message and member_joined_channel event of one join: one id
                assert counts[event.event_id] == 2, key
            else:
                # Discourse topic_created gives no event, so post #1 is the only thread start
                assert counts[event.event_id] == 1, (key, event)


# ---------------------------------------------------------- behaviour shapes


def test_one_poster_top_share() -> None:
    communities = _communities("one_poster")
    assert len(communities) == len(PLATFORMS)
    for cid, events in communities.items():
        posts = _human_posts(events, END - 28 * DAY)
        assert len(posts) >= 10, cid
        top = Counter(e.actor_id for e in posts).most_common(1)[0][1]
        assert top / len(posts) >= 0.9, cid


def test_healthy_is_spread_and_steady() -> None:
    for cid, events in _communities("healthy").items():
        posts = _human_posts(events, END - 28 * DAY)
        top = Counter(e.actor_id for e in posts).most_common(1)[0][1]
        assert top / len(posts) < 0.5, cid
        last_week = len(_human_posts(events, END - 7 * DAY))
        baseline = len(_human_posts(events, END - 35 * DAY, END - 7 * DAY)) / 4
        assert last_week >= 0.5 * baseline, cid


def test_dying_drops_below_half_its_baseline() -> None:
    for cid, events in _communities("dying").items():
        last_week = len(_human_posts(events, END - 7 * DAY))
        baseline = len(_human_posts(events, END - 35 * DAY, END - 7 * DAY)) / 4
        assert baseline >= 10, cid
        assert 0 < last_week < 0.5 * baseline, cid


def test_dead_has_history_and_no_human_post_for_14_days() -> None:
    for cid, events in _communities("dead").items():
        assert _human_posts(events, END - 42 * DAY), cid
        assert not _human_posts(events, END - 14 * DAY), cid


def test_on_demand_answers_within_the_hour() -> None:
    for cid, events in _communities("on_demand").items():
        recent = [e for e in events if e.occurred_at >= END - 7 * DAY]
        latencies, threads = _first_responses(recent)
        assert threads >= 5, cid
        assert statistics.median(latencies) <= 3600, cid
        assert sum(1 for s in latencies if s <= 86400) >= 0.8 * threads, cid


def test_when_we_can_fails_the_on_demand_rule_and_its_bots_do_not_help() -> None:
    for cid, events in _communities("when_we_can").items():
        recent = [e for e in events if e.occurred_at >= END - 7 * DAY]
        latencies, threads = _first_responses(recent)
        assert threads >= 5, cid
        fast = statistics.median(latencies) <= 3600 if latencies else False
        within_day = sum(1 for s in latencies if s <= 86400) >= 0.8 * threads
        assert not (fast and within_day), cid
        assert any(e.actor_type == "bot" and e.kind == "reply" for e in events), cid


@settings(max_examples=15, deadline=None)
@given(
    st.integers(1, 8),
    st.lists(st.sampled_from(BEHAVIOURS), min_size=1, max_size=3, unique=True),
    st.lists(st.sampled_from(PLATFORMS), min_size=1, max_size=4, unique=True),
    st.floats(0.5, 10),
    st.integers(0, 2**32),
)
def test_any_spec_gives_verifiable_adaptable_requests(
    n: int, behaviours: list[str], platforms: list[str], days: float, seed: int
) -> None:
    spec = Spec(n, tuple(behaviours), tuple(platforms), days, END, seed)
    for request in generate(spec, CREDS, SIGNED_AT):
        verify(request)
        for event in to_events(request):
            assert spec.start <= event.occurred_at <= END


def test_the_core_engine_judges_each_behaviour_as_asked() -> None:
    """End to end through the pure parts: simulator -> adapters -> C's CommunityEngine health."""
    from pipeline.core.engine import CommunityEngine

    requests, _ = simulated()
    engines: dict[str, CommunityEngine] = {}
    behaviour: dict[str, str] = {}
    for request in requests:
        for event in to_events(request):
            engine = engines.get(event.community_id)
            if engine is None:
                engine = engines[event.community_id] = CommunityEngine(
                    event.community_id, event.platform, event.space_id
                )
                behaviour[event.community_id] = request.meta["behaviour"]
            engine.apply(event, event.occurred_ms + 1000)
    judged = 0
    for cid, engine in engines.items():
        if cid.count(":") == 1 and cid.startswith("discourse:"):
            continue  # the forum-wide community of Discourse sign-ups, not a simulated one
        engine.advance(int(END.timestamp() * 1000))
        health = engine.health()
        expected = behaviour[cid]
        if expected in ("on_demand", "when_we_can"):
            assert (health.state, health.responsiveness) == ("healthy", expected), cid
        else:
            assert health.state == expected, (cid, health.state, health.flags)
        if expected == "healthy":
            assert health.responsiveness == "on_demand", cid
        judged += 1
    assert judged == len(PLATFORMS) * len(BEHAVIOURS)
