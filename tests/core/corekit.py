"""Helpers for the core tests: build canonical events and run them through an engine."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pipeline.core.engine import CommunityEngine, Emissions
from pipeline.core.policy import DEFAULT_POLICY, CommunityPolicy
from pipeline.core.windows import DEFAULT_WINDOWS, WindowsConfig
from pipeline.events import CanonicalEvent
from pipeline.results import FirstResponse, HealthSnapshot, WindowResult

T0 = int(datetime(2024, 5, 6, tzinfo=UTC).timestamp() * 1000)  # a Monday, 00:00 UTC
MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR

_counter = 0


def ev(
    kind: str,
    actor: str,
    at_ms: int,
    thread: str | None = None,
    actor_type: str = "human",
    event_id: str | None = None,
    parent: str | None = None,
    community: str = "c1",
) -> CanonicalEvent:
    global _counter
    _counter += 1
    return CanonicalEvent(
        event_id=event_id or f"ev-{_counter}",
        platform="test",
        space_id="space",
        community_id=community,
        kind=kind,
        actor_id=actor,
        actor_type=actor_type,  # type: ignore[arg-type]
        thread_id=thread,
        parent_id=parent,
        occurred_at=datetime.fromtimestamp(at_ms / 1000, UTC),
        received_at=datetime.fromtimestamp(at_ms / 1000, UTC),
    )


def engine(policy: CommunityPolicy = DEFAULT_POLICY, config: WindowsConfig = DEFAULT_WINDOWS) -> CommunityEngine:
    return CommunityEngine("c1", "test", "space", policy, config)


class Recorder:
    """Everything an engine emitted, in order."""

    def __init__(self) -> None:
        self.windows: list[WindowResult] = []
        self.first_responses: list[FirstResponse] = []
        self.health: list[HealthSnapshot] = []
        self.duplicates = 0
        self.late_applied = 0
        self.late_dropped = 0

    def add(self, em: Emissions) -> Emissions:
        self.windows += em.windows
        self.first_responses += em.first_responses
        self.health += em.health
        self.duplicates += em.duplicates
        self.late_applied += em.late_applied
        self.late_dropped += em.late_dropped
        return em

    def latest_windows(self) -> dict[str, WindowResult]:
        out: dict[str, WindowResult] = {}
        for w in self.windows:
            if w.key not in out or w.version > out[w.key].version:
                out[w.key] = w
        return out

    def latest_first_responses(self) -> dict[str, FirstResponse]:
        out: dict[str, FirstResponse] = {}
        for r in self.first_responses:
            if r.key not in out or r.version > out[r.key].version:
                out[r.key] = r
        return out


def run(
    events: Iterable[tuple[CanonicalEvent, int]],
    eng: CommunityEngine | None = None,
    finish_at: int | None = None,
) -> tuple[CommunityEngine, Recorder]:
    """Apply (event, wall_ms) pairs in the given order; then advance to ``finish_at``."""
    eng = eng or engine()
    rec = Recorder()
    for event, wall in events:
        rec.add(eng.apply(event, wall))
    if finish_at is not None:
        rec.add(eng.advance(finish_at))
    return eng, rec


def content(row: WindowResult | FirstResponse) -> dict[str, Any]:
    """A row without what depends on when or how often it was emitted."""
    return row.model_dump(exclude={"version", "emitted_at"})
