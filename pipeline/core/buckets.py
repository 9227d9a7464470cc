"""Per-window aggregates: what one community did in one hour or one day.

A bucket keeps counters and posts per human poster, nothing per event. Its
window row (``WindowResult``) is derived from it plus the community's member and
thread books when it is emitted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.events import Kind

# order of the counters in the serialized form
COUNTERS = (
    "threads",
    "replies",
    "reactions",
    "joins",
    "leaves",
    "accepted",
    "other",
    "bot_posts",
    "late_events",
)


@dataclass(slots=True)
class Bucket:
    start_ms: int
    threads: int = 0
    replies: int = 0
    reactions: int = 0
    joins: int = 0
    leaves: int = 0
    accepted: int = 0
    other: int = 0
    bot_posts: int = 0
    late_events: int = 0
    posters: dict[str, int] = field(default_factory=dict)
    version: int = 0
    final: bool = False
    dirty: bool = False
    # old daily buckets keep only their counters (dying baseline); posters are dropped
    compacted: bool = False

    @property
    def posts(self) -> int:
        return self.threads + self.replies

    def add(self, kind: str, actor_id: str, is_human: bool) -> None:
        if kind in (Kind.THREAD_STARTED, Kind.REPLY):
            if not is_human:
                self.bot_posts += 1
                return
            if kind == Kind.THREAD_STARTED:
                self.threads += 1
            else:
                self.replies += 1
            self.posters[actor_id] = self.posters.get(actor_id, 0) + 1
        elif not is_human:
            return  # bots are counted apart, and only for posts
        elif kind == Kind.REACTION:
            self.reactions += 1
        elif kind == Kind.MEMBER_JOINED:
            self.joins += 1
        elif kind == Kind.MEMBER_LEFT:
            self.leaves += 1
        elif kind == Kind.ANSWER_ACCEPTED:
            self.accepted += 1
        else:
            self.other += 1

    def compact(self) -> None:
        self.posters = {}
        self.compacted = True

    def to_plain(self) -> list[object]:
        flags = (1 if self.final else 0) | (2 if self.dirty else 0) | (4 if self.compacted else 0)
        return [self.start_ms, [getattr(self, c) for c in COUNTERS], self.posters, self.version, flags]

    @classmethod
    def from_plain(cls, data: list[Any]) -> Bucket:
        start, counters, posters, version, flags = data
        b = cls(start_ms=start, version=version, posters=dict(posters))
        for name, value in zip(COUNTERS, counters, strict=True):
            setattr(b, name, value)
        b.final, b.dirty, b.compacted = bool(flags & 1), bool(flags & 2), bool(flags & 4)
        return b
