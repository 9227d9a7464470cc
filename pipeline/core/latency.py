"""First responses: per thread, the earliest reply by someone who is neither its author nor a bot.

Replies may arrive before the thread they answer (any order within lateness), when
the author is still unknown. So each thread keeps two candidates, whatever the
author: ``c1`` the earliest response overall and ``c2`` the earliest by an actor
other than ``c1``'s. For any author the first response is then ``c1`` when
``c1`` is not the author, else ``c2``: O(1) per thread, independent of arrival
order (ties on time are broken by actor id). A response older than its thread
(seen in real exports) counts with latency 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass


@dataclass(slots=True)
class Thread:
    start_ms: int | None = None
    author: str | None = None
    c1_actor: str | None = None
    c1_ms: int = 0
    c2_actor: str | None = None
    c2_ms: int = 0
    # version of the FirstResponse row last emitted for this thread (0 = none yet)
    emitted_version: int = 0
    emitted_ms: int | None = None
    emitted_actor: str | None = None

    def first_response(self) -> tuple[str, int] | None:
        if self.author is None or self.c1_actor is None:
            return None
        if self.c1_actor != self.author:
            return self.c1_actor, self.c1_ms
        if self.c2_actor is not None:
            return self.c2_actor, self.c2_ms
        return None

    def add_response(self, actor: str, at_ms: int) -> None:
        if self.c1_actor is None:
            self.c1_actor, self.c1_ms = actor, at_ms
        elif (at_ms, actor) < (self.c1_ms, self.c1_actor):
            if actor != self.c1_actor:
                self.c2_actor, self.c2_ms = self.c1_actor, self.c1_ms
            self.c1_actor, self.c1_ms = actor, at_ms
        elif actor != self.c1_actor and (self.c2_actor is None or (at_ms, actor) < (self.c2_ms, self.c2_actor)):
            self.c2_actor, self.c2_ms = actor, at_ms

    def set_start(self, author: str, start_ms: int) -> None:
        # the same thread reported twice keeps the earliest start (order independent)
        if (
            self.start_ms is None
            or self.author is None
            or (start_ms, author)
            < (
                self.start_ms,
                self.author,
            )
        ):
            self.start_ms, self.author = start_ms, author

    def last_ms(self) -> int:
        times = [t for t in (self.start_ms, self.c1_ms if self.c1_actor else None) if t is not None]
        if self.c2_actor is not None:
            times.append(self.c2_ms)
        return max(times) if times else 0

    def to_plain(self) -> list[object]:
        return [
            self.start_ms,
            self.author,
            self.c1_actor,
            self.c1_ms,
            self.c2_actor,
            self.c2_ms,
            self.emitted_version,
            self.emitted_ms,
            self.emitted_actor,
        ]

    @classmethod
    def from_plain(cls, data: Sequence[object]) -> Thread:
        return cls(*data)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Answered:
    """A thread with a known start, and its first response if any (times in ms)."""

    start_ms: int
    response_ms: int | None

    @property
    def latency_ms(self) -> int | None:
        if self.response_ms is None:
            return None
        return max(0, self.response_ms - self.start_ms)


def known_threads(threads: Iterable[Thread]) -> Iterator[Answered]:
    for t in threads:
        if t.start_ms is None:
            continue
        fr = t.first_response()
        yield Answered(t.start_ms, fr[1] if fr else None)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolation percentile (numpy's default, ``statistics.quantiles`` inclusive).

    ``q`` in [0, 1]; None for no values.
    """
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo = math.floor(pos)
    hi = math.ceil(pos)
    if lo == hi:
        return float(ordered[lo])
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
