"""What the worker emits: window results, first responses and health snapshots.

These are the rows of the ``engagement.windows``, ``engagement.first_responses``
and ``engagement.health`` topics and of the matching ClickHouse tables; the
field names are the column names. Durations are seconds, times UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

WindowSize = Literal["1h", "1d"]
State = Literal["dead", "dying", "one_poster", "healthy"]
Responsiveness = Literal["on_demand", "when_we_can", "no_demand"]
CommunityType = Literal["open", "team"]
Flag = Literal["dead", "dying", "one_poster", "unanswered_backlog", "when_we_can"]

STATES: tuple[State, ...] = ("dead", "dying", "one_poster", "healthy")
RESPONSIVENESS: tuple[Responsiveness, ...] = ("on_demand", "when_we_can", "no_demand")


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json().encode("utf-8")


class WindowResult(_Row):
    """Engagement of one community in one fixed UTC window (humans only unless named bot_)."""

    community_id: str
    platform: str
    space_id: str
    window: WindowSize
    window_start: datetime
    window_end: datetime
    version: int = Field(ge=1, description="rises with every change; the highest wins")
    final: bool = Field(description="stream time passed window_end + grace")
    threads_started: int = 0
    replies: int = 0
    reactions: int = 0
    joins: int = 0
    leaves: int = 0
    answers_accepted: int = 0
    other_events: int = 0
    posts: int = 0
    active_members: int = 0
    new_members: int = 0
    returning_members: int = 0
    replies_per_thread: float = 0.0
    top1_share: float = 0.0
    top3_share: float = 0.0
    gini: float = 0.0
    absence_factor: int = 0
    first_response_p50_s: float | None = None
    first_response_p90_s: float | None = None
    threads_answered: int = 0
    threads_unanswered: int = 0
    oldest_unanswered_age_s: float | None = None
    bot_posts: int = 0
    late_events: int = Field(default=0, description="events applied after the window was final")
    emitted_at: datetime

    @property
    def key(self) -> str:
        return f"{self.community_id}|{self.window}|{self.window_start.isoformat()}"


class FirstResponse(_Row):
    """The first response to a thread from someone other than its author, not a bot."""

    community_id: str
    thread_id: str
    thread_author_id: str
    thread_started_at: datetime
    responder_id: str
    responded_at: datetime
    latency_s: float
    version: int = 1

    @property
    def key(self) -> str:
        return f"{self.community_id}|{self.thread_id}"


class HealthSnapshot(_Row):
    """A community's health as of its stream time; emitted when anything in it changes."""

    community_id: str
    platform: str
    space_id: str
    community_type: CommunityType
    state: State
    previous_state: State | None = None
    flags: list[Flag]
    responsiveness: Responsiveness
    stream_time: datetime
    evaluated_at: datetime
    posts_1h: int = 0
    posts_24h: int = 0
    posts_7d: int = 0
    posts_28d: int = 0
    baseline_posts_per_week: float = 0.0
    active_members_7d: int = 0
    top1_share_28d: float = 0.0
    threads_started_7d: int = 0
    first_response_p50_7d_s: float | None = None
    answered_within_sla_7d: float | None = Field(
        default=None, description="share of the last 7 d's threads answered within 24 h"
    )
    unanswered_threads: int = 0
    oldest_unanswered_age_s: float | None = None
    last_post_at: datetime | None = None
    version: int = 1
