"""The read API on the real embedded engine: latest health, filters, drill-down, highest version."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel
from storage_samples import day, first_response, health, window

from pipeline.storage.queries import community_detail, iso_ms, list_communities, sort_communities, windows_of
from pipeline.storage.rows import TABLES


def store(client: Any, items: Sequence[BaseModel]) -> None:
    """Insert rows the way the sink does (same column lists), one insert per item."""
    for item in items:
        table = next(t for t in TABLES if isinstance(item, t.model))
        client.insert(table.name, [tuple(item.__dict__[c] for c in table.columns)], column_names=table.columns)


def test_list_shows_the_latest_health_of_each_community(migrated: Any) -> None:
    store(
        migrated,
        [
            health("a", "healthy", minute=0),
            health("a", "dying", minute=10, previous="healthy", posts_7d=3),
            health("a", "healthy", minute=5),  # older stream time, inserted last
            health("b", "dead", minute=1, platform="github", unanswered_threads=0),
            health("c", "one_poster", minute=2, top1_share_28d=0.95),
        ],
    )
    rows = list_communities(migrated)
    assert [(r["community_id"], r["state"]) for r in rows] == [("b", "dead"), ("a", "dying"), ("c", "one_poster")]
    a = rows[1]
    assert a["posts_7d"] == 3
    assert a["flags"] == ["dying"]
    assert a["previous_state"] == "healthy"
    assert a["stream_time"] == "2024-05-06T10:10:00.000Z"
    assert a["first_response_p50_7d_s"] == 600.0
    assert a["responsiveness"] == "on_demand"


def test_filters_apply_to_the_latest_snapshot_only(migrated: Any) -> None:
    store(
        migrated,
        [
            health("a", "dying", minute=0),
            health("a", "healthy", minute=1, previous="dying"),
            health("b", "dying", minute=0, platform="github"),
        ],
    )
    assert [r["community_id"] for r in list_communities(migrated, state="dying")] == ["b"]
    assert [r["community_id"] for r in list_communities(migrated, platform="slack")] == ["a"]
    assert list_communities(migrated, state="dead") == []
    assert [r["community_id"] for r in list_communities(migrated, state="dying", platform="github")] == ["b"]


def test_replayed_rows_do_not_change_the_answers(migrated: Any) -> None:
    rows = [health("a", "dying", minute=3, previous="healthy"), window("a", 0, 1), window("a", 0, 2)]
    store(migrated, rows)
    first = (list_communities(migrated), community_detail(migrated, "a"))
    store(migrated, rows)
    store(migrated, rows)
    assert (list_communities(migrated), community_detail(migrated, "a")) == first


def test_detail_has_the_highest_version_of_each_window_oldest_first(migrated: Any) -> None:
    store(
        migrated,
        [
            window("a", 0, version=1),
            window("a", 0, version=3, final=True),
            window("a", 0, version=2),
            window("a", 1, version=1),
            window("b", 0, version=9),
            day("a", 0, version=1),
            day("a", 0, version=2, posts=40),
            health("a", "healthy", minute=0),
            health("a", "dying", minute=30, previous="healthy"),
            first_response("a"),
        ],
    )
    detail = community_detail(migrated, "a")
    assert detail is not None
    assert detail["health"]["state"] == "dying"
    hourly = detail["hourly"]
    assert [(w["window_start"], w["version"], w["final"]) for w in hourly] == [
        ("2024-05-06T10:00:00.000Z", 3, True),
        ("2024-05-06T11:00:00.000Z", 1, False),
    ]
    assert hourly[0]["posts"] == 9
    assert [(w["window"], w["version"], w["posts"]) for w in detail["daily"]] == [("1d", 2, 40)]
    assert [(c["from_state"], c["to_state"]) for c in detail["state_changes"]] == [("healthy", "dying")]
    assert detail["state_changes"][0]["changed_at"] == "2024-05-06T10:30:00.000Z"
    limited = community_detail(migrated, "a", hours=1)
    assert limited is not None and [w["window_start"] for w in limited["hourly"]] == ["2024-05-06T11:00:00.000Z"]


def test_unknown_community_has_no_detail(migrated: Any) -> None:
    assert community_detail(migrated, "nobody") is None
    assert list_communities(migrated) == []


@given(st.integers(0, 4_102_444_800_000))
def test_iso_ms_round_trips_milliseconds(ms: int) -> None:
    from datetime import datetime

    text = iso_ms(ms)
    assert text is not None and text.endswith("Z")
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert round(parsed.timestamp() * 1000) == ms


def test_sorting_puts_the_worst_first() -> None:
    records = [
        {"community_id": "z", "state": "healthy", "unanswered_threads": 9},
        {"community_id": "y", "state": "dead", "unanswered_threads": 0},
        {"community_id": "x", "state": "healthy", "unanswered_threads": 10},
        {"community_id": "w", "state": "dying", "unanswered_threads": 1},
    ]
    assert [r["community_id"] for r in sort_communities(records)] == ["y", "w", "x", "z"]


def test_windows_of_several_communities_in_one_read(migrated: Any) -> None:
    store(
        migrated,
        [
            window("a", 0, version=1),
            window("a", 0, version=2, final=True),
            window("a", 1, version=1),
            window("a", 2, version=1),
            window("b", 1, version=4),
            window("c", 0, version=1),
            day("b", 0, version=1),
        ],
    )
    got = windows_of(migrated, ["a", "b", "nobody"], "1h", 2)
    assert sorted(got) == ["a", "b"]
    assert [(w["window_start"], w["version"]) for w in got["a"]] == [
        ("2024-05-06T11:00:00.000Z", 1),
        ("2024-05-06T12:00:00.000Z", 1),
    ]
    assert [(w["window"], w["version"]) for w in got["b"]] == [("1h", 4)]
    assert [(w["window"], w["posts"]) for w in windows_of(migrated, ["b"], "1d", 5)["b"]] == [("1d", 3)]
    assert windows_of(migrated, ["a"], "1h", 3)["a"][0]["version"] == 2  # the highest version of 10:00
