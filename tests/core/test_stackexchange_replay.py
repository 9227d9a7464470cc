"""Replay of real Stack Exchange activity (tests/fixtures/activity, CC BY-SA; see its README)."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest
from corekit import DAY, content
from test_engine_windows import in_time_order, shuffled_within_grace

from pipeline.core.engine import CommunityEngine
from pipeline.core.stackexchange import DELETED, comment_event, events_from_rows, post_event
from pipeline.events import CanonicalEvent

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "activity"
COMMUNITY = "052012-literature"  # 319 questions, 526 answers, 1,105 comments


def _rows(name: str) -> list[dict[str, str]]:
    with open(FIXTURES / name, newline="", encoding="utf-8") as f:
        return [row for row in csv.DictReader(f) if row["community"] == COMMUNITY]


@pytest.fixture(scope="module")
def rows() -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    return _rows("posts.csv"), _rows("comments.csv")


@pytest.fixture(scope="module")
def events(rows) -> list[CanonicalEvent]:
    return events_from_rows(*rows)


def _replay(arrivals, end_ms: int):
    eng = CommunityEngine(COMMUNITY, "stackexchange", "stackexchange.com")
    latest: dict[str, object] = {}
    versions: dict[str, int] = {}
    dropped = 0
    for event, wall in arrivals:
        em = eng.apply(event, wall)
        dropped += em.late_dropped
        for w in em.windows:
            assert w.version > versions.get(w.key, 0)  # versions only rise
            versions[w.key] = w.version
            latest[w.key] = w
    for w in eng.advance(end_ms).windows:
        latest[w.key] = w
    return latest, dropped


def test_rows_become_the_right_events(rows) -> None:
    posts, comments = rows
    q = next(r for r in posts if r["post_type_id"] == "1")
    a = next(r for r in posts if r["post_type_id"] == "2")
    c = comments[0]
    eq, ea, ec = post_event(q), post_event(a), comment_event(c)
    assert eq is not None and ea is not None
    assert (eq.kind, eq.thread_id, eq.parent_id) == ("thread_started", q["post_id"], None)
    assert (ea.kind, ea.thread_id, ea.parent_id) == ("reply", a["thread_id"], a["parent_id"])
    assert (ec.kind, ec.thread_id, ec.parent_id) == ("reply", c["thread_id"], c["post_id"])
    assert post_event(q) == eq  # stable ids: the same row, the same event
    assert eq.event_id != ec.event_id
    deleted = comment_event({**c, "author_id": ""})
    assert deleted.actor_id == DELETED and deleted.actor_type == "human"


def test_replay_in_time_order_and_shuffled_within_grace_give_the_same_final_windows(events) -> None:
    end = events[-1].occurred_ms + 3 * DAY
    ordered, dropped_a = _replay(in_time_order(events), end)
    shuffled, dropped_b = _replay(shuffled_within_grace(events, seed=20240506), end)
    assert dropped_a == dropped_b == 0
    assert all(w.final for w in ordered.values())  # type: ignore[attr-defined]
    assert {k: content(w) for k, w in shuffled.items()} == {  # type: ignore[arg-type]
        k: content(w)  # type: ignore[arg-type]
        for k, w in ordered.items()
    }


def test_daily_posts_equal_a_direct_count_of_the_csv(rows, events) -> None:
    posts, comments = rows
    expected = Counter(r["created_at"][:10] for r in posts + comments)
    end = events[-1].occurred_ms + 3 * DAY
    latest, _ = _replay(in_time_order(events), end)
    got = Counter(
        {
            w.window_start.date().isoformat(): w.posts  # type: ignore[attr-defined]
            for w in latest.values()
            if w.window == "1d"  # type: ignore[attr-defined]
        }
    )
    assert +got == +expected
    assert sum(got.values()) == len(posts) + len(comments)
