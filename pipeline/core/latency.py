"""First responses: per thread, the earliest reply by someone who is neither its author nor a bot.

Replies may arrive before the thread they answer (any order within lateness), when
neither the author nor the start is known yet. Such replies are *held* (a list per
thread) until the start arrives; then those close enough to the start become
candidates. Candidates are two, whatever the author: ``c1`` the earliest response
overall and ``c2`` the earliest by an actor other than ``c1``'s. For any author the
first response is then ``c1`` when ``c1`` is not the author, else ``c2``: O(1) per
thread, independent of arrival order (ties on time are broken by actor id).

Early replies (seen in real exports: answers merged in from an older question): a
reply at most ``early_ms`` before its thread's start answers it *at the start*
(latency 0, and in the windows of the start, see ``Thread.answered_at``); an earlier
one never answers it. The cut is applied to the held replies when the start arrives
and to each later reply, so the candidates are always exactly the replies the rule
admits: two candidates cannot be filtered after the fact (a third reply, the one that
should take over from a dropped candidate, was never kept).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


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
    emitted_start: int | None = None
    # (ms, actor) of replies that are not candidates: all of them while the start is unknown,
    # and those too far before it (an earlier report of the start may still admit them)
    held: list[tuple[int, str]] = field(default_factory=list)

    def first_response(self) -> tuple[str, int] | None:
        """(responder, reply time); the reply may precede the start (see ``answered_at``)."""
        if self.author is None or self.c1_actor is None:
            return None
        if self.c1_actor != self.author:
            return self.c1_actor, self.c1_ms
        if self.c2_actor is not None:
            return self.c2_actor, self.c2_ms
        return None

    def answered_at(self) -> int | None:
        """When the thread counts as answered: its first response, or its start if that is later.

        A thread cannot be answered before it exists: an early reply answers it at its start,
        so latency is never negative and the windows holding the start hold the answer too
        (they are the ones the start's event changes, whatever the arrival order).
        """
        fr = self.first_response()
        if fr is None or self.start_ms is None:
            return None
        return max(fr[1], self.start_ms)

    def add_response(self, actor: str, at_ms: int, early_ms: int | None = None) -> None:
        """A reply by ``actor`` (not a bot); ``early_ms``: how far before the start it may be (None: any)."""
        if self.start_ms is None or (early_ms is not None and at_ms < self.start_ms - early_ms):
            self.held.append((at_ms, actor))
        else:
            self._candidate(actor, at_ms)

    def _candidate(self, actor: str, at_ms: int) -> None:
        if self.c1_actor is None:
            self.c1_actor, self.c1_ms = actor, at_ms
        elif (at_ms, actor) < (self.c1_ms, self.c1_actor):
            if actor != self.c1_actor:
                self.c2_actor, self.c2_ms = self.c1_actor, self.c1_ms
            self.c1_actor, self.c1_ms = actor, at_ms
        elif actor != self.c1_actor and (self.c2_actor is None or (at_ms, actor) < (self.c2_ms, self.c2_actor)):
            self.c2_actor, self.c2_ms = actor, at_ms

    def set_start(self, author: str, start_ms: int, early_ms: int | None = None) -> None:
        """Record the start; the same thread reported twice keeps the earliest (order independent).

        Held replies at most ``early_ms`` (None: any) before the start become candidates; the
        others stay held, in case a second report moves the start earlier.
        """
        if self.start_ms is None or self.author is None or (start_ms, author) < (self.start_ms, self.author):
            self.start_ms, self.author = start_ms, author
        if not self.held:
            return
        cut = None if early_ms is None else self.start_ms - early_ms
        still: list[tuple[int, str]] = []
        for at, actor in self.held:
            if cut is None or at >= cut:
                self._candidate(actor, at)
            else:
                still.append((at, actor))
        self.held = still

    def forget_held_before(self, before_ms: int) -> None:
        if self.held:
            self.held = [h for h in self.held if h[0] >= before_ms]


# (start_ms, answered_at ms or None) of a thread whose start is known
Answered = tuple[int, int | None]


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


class ThreadBook:
    """Threads of one community with two small indexes kept beside the records.

    ``open``: threads with a start and no first response yet; ``orphans``: threads
    holding replies (``Thread.held``: the start unknown, or replies too far before it);
    ``recent``: threads whose first response is recent enough that a window that
    can still be emitted may need it (pruned with the book). ``by_day``: thread ids
    by the UTC day of their start, for the 7-day health views. Window rows and
    health then look at a few dozen threads instead of every remembered one.
    ``_day_views``: the answered view of each start day, kept until a thread of that
    day changes, so health (evaluated every few minutes of stream time) rebuilds only
    the days that moved (usually today) instead of every thread of the week.
    """

    __slots__ = ("_day_views", "by_day", "open", "orphans", "recent", "settled", "threads")

    def __init__(self) -> None:
        self.threads: dict[str, Thread] = {}
        self.open: set[str] = set()
        self.orphans: set[str] = set()  # threads with held replies, or with no start (yet)
        self.recent: set[str] = set()
        self.by_day: dict[int, set[str]] = {}
        # answered threads no window row can need any more, kept only for the 7-day health
        # views: (start, first response) by start day, without ids, authors or candidates
        self.settled: dict[int, list[tuple[int, int]]] = {}
        self._day_views: dict[int, list[Answered]] = {}

    def __len__(self) -> int:
        return len(self.threads)

    def get(self, tid: str) -> Thread:
        thread = self.threads.get(tid)
        if thread is None:
            thread = self.threads[tid] = Thread()
            self.orphans.add(tid)
        return thread

    def reindex(self, tid: str, thread: Thread, old_start_ms: int | None) -> None:
        """Call after a change to ``thread``."""
        views = self._day_views
        if views:
            if old_start_ms is not None:
                views.pop(_day(old_start_ms), None)
            if thread.start_ms is not None:
                views.pop(_day(thread.start_ms), None)
        if thread.start_ms != old_start_ms:
            if old_start_ms is not None:
                day = self.by_day.get(_day(old_start_ms))
                if day is not None:
                    day.discard(tid)
            if thread.start_ms is not None:
                self.by_day.setdefault(_day(thread.start_ms), set()).add(tid)
        if thread.start_ms is None or thread.held:
            self.orphans.add(tid)
        else:
            self.orphans.discard(tid)
        if thread.start_ms is None:
            return
        if thread.first_response() is None:
            self.open.add(tid)
            self.recent.discard(tid)
        else:
            self.open.discard(tid)
            self.recent.add(tid)

    def answered_view(self, tids: Iterable[str]) -> list[Answered]:
        out: list[Answered] = []
        threads = self.threads
        for tid in tids:
            t = threads.get(tid)
            if t is not None and t.start_ms is not None:
                out.append((t.start_ms, t.answered_at()))
        return out

    def window_view(self) -> list[Answered]:
        """Threads a window row can need: the open ones and the recently answered ones."""
        return self.open_view() + self.answered_view(self.recent)

    def open_view(self) -> list[Answered]:
        # open threads have a start and no first response by definition
        threads = self.threads
        return [(threads[tid].start_ms or 0, None) for tid in self.open]

    def started_since(self, since_ms: int) -> list[Answered]:
        out: list[Answered] = []
        views = self._day_views
        settled = self.settled
        for day in self.by_day.keys() | settled.keys():
            if day + _DAY_MS <= since_ms:
                continue
            view = views.get(day)
            if view is None:
                view = views[day] = self.answered_view(self.by_day.get(day, ()))
                view.extend(settled.get(day, ()))
            if day >= since_ms:
                out += view
            else:
                out += [a for a in view if a[0] >= since_ms]
        return out

    def prune_changes_window_view(self, answered_before_ms: int, open_before_ms: int) -> bool:
        """Whether ``prune`` with these cutoffs would change ``window_view()``."""
        threads = self.threads
        for tid in self.open:
            if (threads[tid].start_ms or 0) < open_before_ms:
                return True
        for tid in self.recent:
            at = threads[tid].answered_at()
            if at is not None and at < answered_before_ms:
                return True
        return False

    def prune(
        self,
        answered_before_ms: int,
        started_before_ms: int,
        open_before_ms: int,
        held_before_ms: int,
    ) -> None:
        """Forget threads no window, health view or late event can still change or need.

        An answered thread goes once it was answered before ``answered_before_ms`` and
        it started before ``started_before_ms``; an open thread once it started before
        ``open_before_ms``. Held replies older than ``held_before_ms`` are forgotten
        (no start that can still arrive admits them), and an orphan with none left goes.
        """
        drop: list[str] = []
        for tid in list(self.orphans):
            t = self.threads[tid]
            t.forget_held_before(held_before_ms)
            if t.start_ms is None and not t.held:
                drop.append(tid)
            elif t.start_ms is not None and not t.held:
                self.orphans.discard(tid)
        for tid in self.open:
            if (self.threads[tid].start_ms or 0) < open_before_ms:
                drop.append(tid)
        settle: list[str] = []
        for tid in list(self.recent):
            at = self.threads[tid].answered_at()
            if at is not None and at < answered_before_ms:
                self.recent.discard(tid)
                settle.append(tid)
        # answered threads that left "recent" stay for the 7 d views only, as (start, answered)
        for tid in settle:
            t = self.threads[tid]
            at = t.answered_at()
            if t.start_ms is not None and at is not None:
                self.settled.setdefault(_day(t.start_ms), []).append((t.start_ms, at))
            drop.append(tid)
        for old_day in [d for d in self.settled if d + _DAY_MS <= started_before_ms]:
            del self.settled[old_day]
        # (threads restored answered but not recent, from states written before "settled")
        for old_day in [d for d in self.by_day if d + _DAY_MS <= started_before_ms]:
            for tid in self.by_day[old_day]:
                t = self.threads[tid]
                if (t.start_ms or 0) < started_before_ms and tid not in self.open and tid not in self.recent:
                    drop.append(tid)
        if drop:
            self._day_views.clear()
        for tid in set(drop):
            t = self.threads.pop(tid)
            self.open.discard(tid)
            self.recent.discard(tid)
            self.orphans.discard(tid)
            if t.start_ms is not None:
                ids = self.by_day.get(_day(t.start_ms))
                if ids is not None:
                    ids.discard(tid)
                    if not ids:
                        del self.by_day[_day(t.start_ms)]

    @classmethod
    def rebuild(cls, threads: dict[str, Thread], recent_since_ms: int) -> ThreadBook:
        book = cls()
        book.threads = threads
        for tid, t in threads.items():
            if t.start_ms is None or t.held:
                book.orphans.add(tid)
            if t.start_ms is None:
                continue
            book.by_day.setdefault(_day(t.start_ms), set()).add(tid)
            at = t.answered_at()
            if at is None:
                book.open.add(tid)
            elif at >= recent_since_ms:
                book.recent.add(tid)
        return book


_DAY_MS = 86_400_000


def _day(ms: int) -> int:
    return ms - ms % _DAY_MS
