"""Rows of every topic the sink stores, built from the real models (shared by the storage tests)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.events import CanonicalEvent, stable_event_id
from pipeline.results import FirstResponse, HealthSnapshot, WindowResult

T0 = datetime(2024, 5, 6, 10, 0, tzinfo=UTC)
# raw events expire (TTL, 90 days of event time by default): keep them recent
EVENTS_T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)


def window(community: str = "c1", hour: int = 0, version: int = 1, **figures: Any) -> WindowResult:
    start = T0 + timedelta(hours=hour)
    values: dict[str, Any] = {
        "community_id": community,
        "platform": "slack",
        "space_id": "T1",
        "window": "1h",
        "window_start": start,
        "window_end": start + timedelta(hours=1),
        "version": version,
        "final": False,
        "posts": 3 * version,
        "active_members": 2,
        "emitted_at": start + timedelta(minutes=version),
    }
    values.update(figures)
    return WindowResult(**values)


def day(community: str = "c1", n: int = 0, version: int = 1, **figures: Any) -> WindowResult:
    start = datetime(2024, 5, 6, tzinfo=UTC) + timedelta(days=n)
    values: dict[str, Any] = {"window": "1d", "window_start": start, "window_end": start + timedelta(days=1)}
    values.update(figures)
    return window(community, version=version, **values)


def health(
    community: str = "c1",
    state: str = "healthy",
    minute: int = 0,
    previous: str | None = None,
    platform: str = "slack",
    **figures: Any,
) -> HealthSnapshot:
    at = T0 + timedelta(minutes=minute)
    values: dict[str, Any] = {
        "community_id": community,
        "platform": platform,
        "space_id": "T1",
        "community_type": "open",
        "state": state,
        "previous_state": previous,
        "flags": [state] if state != "healthy" else [],
        "responsiveness": "on_demand",
        "stream_time": at,
        "evaluated_at": at + timedelta(seconds=1),
        "posts_7d": 12,
        "active_members_7d": 4,
        "top1_share_28d": 0.5,
        "first_response_p50_7d_s": 600.0,
        "unanswered_threads": 1,
    }
    values.update(figures)
    return HealthSnapshot(**values)


def first_response(community: str = "c1", thread: str = "th1", latency: float = 60.0) -> FirstResponse:
    return FirstResponse(
        community_id=community,
        thread_id=thread,
        thread_author_id="u1",
        thread_started_at=T0,
        responder_id="u2",
        responded_at=T0 + timedelta(seconds=latency),
        latency_s=latency,
    )


def event(community: str = "c1", n: int = 0) -> CanonicalEvent:
    return CanonicalEvent(
        event_id=stable_event_id("test", community, n),
        platform="slack",
        space_id="T1",
        community_id=community,
        kind="reply" if n % 3 else "thread_started",
        actor_id=f"u{n % 7}",
        thread_id=f"th{n // 3}",
        occurred_at=EVENTS_T0 + timedelta(seconds=n),
        received_at=EVENTS_T0 + timedelta(seconds=n, milliseconds=250),
    )
