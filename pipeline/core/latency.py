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
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.windows import DAY_MS, SIZE_MS

# threads per state page: a busy community's save writes the pages of the threads it touched,
# not all of them; a community that never had more threads than this keeps them in one record
THREADS_PER_PAGE = 256


def page_of(seq: int) -> int:
    """The state page of the ``seq``-th thread a community created (counting from 0)."""
    return seq // THREADS_PER_PAGE


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
    # the state page this thread is saved in (see ThreadBook.seq and pipeline.core.state)
    page: int = 0

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


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolation percentile (numpy's default, ``statistics.quantiles`` inclusive).

    ``q`` in [0, 1]; None for no values.
    """
    return percentile_of_sorted(sorted(values), q)


def percentile_of_sorted(ordered: Sequence[float], q: float, scale: float = 1.0) -> float | None:
    """``percentile`` of values already in order, each divided by ``scale`` (ms -> s) before use."""
    if not ordered:
        return None
    pos = (len(ordered) - 1) * q
    lo = math.floor(pos)
    hi = math.ceil(pos)
    low = ordered[lo] / scale
    if lo == hi:
        return float(low)
    return low + (ordered[hi] / scale - low) * (pos - lo)


_Edit = Callable[[list[Any], Any], None]  # insort, or _remove


@dataclass(frozen=True, slots=True)
class SevenDays:
    """The thread figures of a 7 d health view (threads started since its start)."""

    started: int
    # first-response latencies of the answered ones, in order: the book's own list, so read it
    # before the book changes
    latencies_ms: list[int]
    within_sla: int  # answered within the SLA
    eligible: int  # answered within the SLA, or older than it


class ThreadBook:
    """Threads of one community, with indexes kept beside the records as they change.

    Sets: ``open``: threads with a start and no first response yet; ``orphans``:
    threads holding replies (``Thread.held``: the start unknown, or replies too far
    before it); ``recent``: threads whose first response is recent enough that a
    window that can still be emitted may need it (pruned with the book); ``by_day``:
    thread ids by the UTC day of their start (pruning finds old days' threads by it).
    ``settled``: answered threads no window
    row can need any more, kept as (start, answered) for the 7 d health views only.

    Sorted indexes, so that a window row or a health evaluation costs a few binary
    searches instead of a pass over every thread the book keeps (a busy channel keeps
    days of them, and the worker emits its rows several times a second):

    - ``starts``: the start of every thread with a known start and every settled one;
    - ``open_starts``: the starts of the open threads;
    - ``answers``: (answered at, start) of the recent threads;
    - ``window_latencies``: per window (size, start), the latencies (ms) of the recent
      threads answered in it, in order;
    - ``answered``: (start, latency ms) of every answered thread and every settled one;
    - ``health_latencies``: the latencies of ``answered`` with a start at or after
      ``health_from`` (the last 7 d view's start, which only moves on).

    Sorted Python lists: inserting into one moves memory, but stays cheap up to
    hundreds of thousands of entries, and an empty list costs far less than a tree
    (a worker holds one book per community).
    """

    __slots__ = (
        "answered",
        "answers",
        "by_day",
        "health_from",
        "health_latencies",
        "open",
        "open_starts",
        "orphans",
        "page_tids",
        "recent",
        "seq",
        "settled",
        "starts",
        "threads",
        "touched",
        "window_latencies",
    )

    def __init__(self) -> None:
        self.threads: dict[str, Thread] = {}
        self.open: set[str] = set()
        self.orphans: set[str] = set()  # threads with held replies, or with no start (yet)
        self.recent: set[str] = set()
        self.by_day: dict[int, set[str]] = {}
        self.settled: dict[int, list[tuple[int, int]]] = {}
        self.starts: list[int] = []
        self.open_starts: list[int] = []
        self.answers: list[tuple[int, int]] = []
        self.window_latencies: dict[tuple[str, int], list[int]] = {}
        self.answered: list[tuple[int, int]] = []
        self.health_from: int | None = None
        self.health_latencies: list[int] = []
        # state pages: the n-th thread ever created goes in page n // THREADS_PER_PAGE, so a
        # save writes the pages of the threads touched since the last one (pipeline.core.state)
        self.seq = 0
        self.page_tids: dict[int, list[str]] = {}  # page -> ids of threads created in it (some gone)
        self.touched: set[int] = set()  # pages whose threads changed since the last save

    def __len__(self) -> int:
        return len(self.threads)

    def get(self, tid: str) -> Thread:
        """The thread, created if new; the caller is about to change it (its page is touched)."""
        thread = self.threads.get(tid)
        if thread is None:
            page = page_of(self.seq)
            self.seq += 1
            thread = self.threads[tid] = Thread(page=page)
            self.page_tids.setdefault(page, []).append(tid)
            self.orphans.add(tid)
        self.touched.add(thread.page)
        return thread

    def reindex(self, tid: str, thread: Thread, old_start_ms: int | None, old_answered_ms: int | None) -> None:
        """Call after a change to ``thread``, with its start and ``answered_at()`` before it."""
        before = (old_start_ms, old_answered_ms, tid in self.open, tid in self.recent)
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
        if thread.start_ms is not None:
            if thread.first_response() is None:
                self.open.add(tid)
                self.recent.discard(tid)
            else:
                self.open.discard(tid)
                self.recent.add(tid)
        after = (thread.start_ms, thread.answered_at(), tid in self.open, tid in self.recent)
        if after != before:  # most replies change no first response
            self._index(*before, add=False)
            self._index(*after, add=True)

    def _index(self, start: int | None, answered: int | None, is_open: bool, is_recent: bool, *, add: bool) -> None:
        """Add a thread's entries to the indexes, or remove them (``add=False``)."""
        if start is None:
            return
        edit: _Edit = insort if add else _remove
        edit(self.starts, start)
        if is_open:
            edit(self.open_starts, start)
        if answered is None:
            return
        self._index_answer(start, answered - start, edit)
        if is_recent:
            self._index_recent(start, answered, edit)

    def _index_answer(self, start: int, latency: int, edit: _Edit) -> None:
        edit(self.answered, (start, latency))
        if self.health_from is not None and start >= self.health_from:
            edit(self.health_latencies, latency)

    def _index_recent(self, start: int, answered: int, edit: _Edit) -> None:
        edit(self.answers, (answered, start))
        for size, step in _WINDOW_STEPS:
            key = (size, answered - answered % step)
            latencies = self.window_latencies.get(key)
            if latencies is None:
                latencies = self.window_latencies[key] = []
            edit(latencies, answered - start)
            if not latencies:
                del self.window_latencies[key]

    # -- views

    def latencies_in(self, size: str, window_start_ms: int) -> list[int]:
        """Latencies (ms, in order) of the recent threads first answered in a window."""
        return self.window_latencies.get((size, window_start_ms), [])

    def unanswered_at(self, end_ms: int, horizon_ms: int) -> tuple[int, int | None]:
        """Threads started in the ``horizon_ms`` before ``end_ms`` and not answered by then:
        (how many, the earliest start), over the open and the recent threads."""
        lo = end_ms - horizon_ms
        opens = self.open_starts
        i, j = bisect_left(opens, lo), bisect_left(opens, end_ms)
        count = j - i
        oldest = opens[i] if count else None
        # answered since the end: few, unless the window is an old one
        for _, start in self.answers[bisect_left(self.answers, (end_ms,)) :]:
            if lo <= start < end_ms:
                count += 1
                if oldest is None or start < oldest:
                    oldest = start
        return count, oldest

    def backlog(self, now_ms: int, horizon_ms: int, sla_ms: float) -> tuple[int, int | None]:
        """Open threads started in the horizon before ``now_ms``: (how many are past the SLA,
        the earliest start)."""
        opens = self.open_starts
        i = bisect_left(opens, now_ms - horizon_ms)
        return max(0, bisect_right(opens, now_ms - sla_ms) - i), opens[i] if i < len(opens) else None

    def seven_days(self, since_ms: int, now_ms: int, sla_ms: float) -> SevenDays:
        """Threads started at or after ``since_ms`` (moves on only; an earlier one rebuilds)."""
        self._slide_health(since_ms)
        starts = self.starts
        latencies = self.health_latencies
        # eligible: answered within the SLA, or started at least the SLA ago. Every thread
        # answered by now that started less than the SLA ago was answered within it.
        older = max(0, bisect_right(starts, now_ms - sla_ms) - bisect_left(starts, since_ms))
        younger_from = max(since_ms, math.floor(now_ms - sla_ms) + 1)
        younger_answered = len(self.answered) - bisect_left(self.answered, (younger_from,))
        return SevenDays(
            started=len(starts) - bisect_left(starts, since_ms),
            latencies_ms=latencies,
            within_sla=bisect_right(latencies, sla_ms),
            eligible=older + younger_answered,
        )

    def _slide_health(self, since_ms: int) -> None:
        answered = self.answered
        if self.health_from is None or since_ms < self.health_from:
            self.health_latencies = sorted(lat for _, lat in answered[bisect_left(answered, (since_ms,)) :])
        else:
            gone = answered[bisect_left(answered, (self.health_from,)) : bisect_left(answered, (since_ms,))]
            for _, lat in gone:
                _remove(self.health_latencies, lat)
        self.health_from = since_ms

    def next_start_crossing(self, now_ms: int, offsets: Iterable[int]) -> int | None:
        """The earliest ``start + offset`` after ``now_ms``, over every start and offset."""
        starts = self.starts
        due: int | None = None
        for offset in offsets:
            i = bisect_right(starts, now_ms - offset)
            if i < len(starts) and (due is None or starts[i] + offset < due):
                due = starts[i] + offset
        return due

    def prune_forgets_row_threads(self, answered_before_ms: int, open_before_ms: int) -> bool:
        """Whether ``prune`` with these cutoffs would forget a thread a window row sees."""
        return bool(
            (self.open_starts and self.open_starts[0] < open_before_ms)
            or (self.answers and self.answers[0][0] < answered_before_ms)
        )

    # -- pruning

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
            held = len(t.held)
            t.forget_held_before(held_before_ms)
            if len(t.held) != held:
                self.touched.add(t.page)
            if t.start_ms is None and not t.held:
                drop.append(tid)
            elif t.start_ms is not None and not t.held:
                self.orphans.discard(tid)
        for tid in self.open:
            if (self.threads[tid].start_ms or 0) < open_before_ms:
                drop.append(tid)
        # answered threads that leave "recent" stay for the 7 d views only, as (start, answered):
        # they keep their entries in ``starts`` and ``answered``
        for tid in list(self.recent):
            t = self.threads[tid]
            at = t.answered_at()
            if at is not None and at < answered_before_ms and t.start_ms is not None:
                self._index_recent(t.start_ms, at, _remove)
                self.recent.discard(tid)
                self.settled.setdefault(_day(t.start_ms), []).append((t.start_ms, at))
                del self.threads[tid]
                self.touched.add(t.page)
                self._forget(tid, t)
        for old_day in [d for d in self.settled if d + DAY_MS <= started_before_ms]:
            for start, at in self.settled.pop(old_day):
                _remove(self.starts, start)
                self._index_answer(start, at - start, _remove)
        # (threads restored answered but not recent, from states written before "settled")
        for old_day in [d for d in self.by_day if d + DAY_MS <= started_before_ms]:
            for tid in self.by_day[old_day]:
                t = self.threads[tid]
                if (t.start_ms or 0) < started_before_ms and tid not in self.open and tid not in self.recent:
                    drop.append(tid)
        for tid in set(drop):
            t = self.threads.pop(tid)
            self.touched.add(t.page)
            self._index(t.start_ms, t.answered_at(), tid in self.open, tid in self.recent, add=False)
            self._forget(tid, t)

    def _forget(self, tid: str, t: Thread) -> None:
        """Drop a thread no longer in ``threads`` from the sets."""
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
    def rebuild(
        cls,
        threads: dict[str, Thread],
        recent_since_ms: int,
        settled: dict[int, list[tuple[int, int]]],
        seq: int | None = None,
    ) -> ThreadBook:
        """A book of restored threads (each with its ``page``); ``seq`` None: as many as there are."""
        book = cls()
        book.threads = threads
        book.settled = settled
        book.seq = len(threads) if seq is None else seq
        for tid, t in threads.items():
            book.page_tids.setdefault(t.page, []).append(tid)
            if t.start_ms is None or t.held:
                book.orphans.add(tid)
            if t.start_ms is None:
                continue
            book.by_day.setdefault(_day(t.start_ms), set()).add(tid)
            book.starts.append(t.start_ms)
            at = t.answered_at()
            if at is None:
                book.open.add(tid)
                book.open_starts.append(t.start_ms)
                continue
            book.answered.append((t.start_ms, at - t.start_ms))
            if at >= recent_since_ms:
                book.recent.add(tid)
                book.answers.append((at, t.start_ms))
                for size, step in _WINDOW_STEPS:
                    book.window_latencies.setdefault((size, at - at % step), []).append(at - t.start_ms)
        for pairs in settled.values():
            for start, at in pairs:
                book.starts.append(start)
                book.answered.append((start, at - start))
        book.starts.sort()
        book.open_starts.sort()
        book.answers.sort()
        book.answered.sort()
        for latencies in book.window_latencies.values():
            latencies.sort()
        return book


def _remove(index: list[Any], value: Any) -> None:
    i = bisect_left(index, value)
    if i == len(index) or index[i] != value:
        raise ValueError(f"thread index out of step: {value!r} is not in it")
    del index[i]


_WINDOW_STEPS = tuple(SIZE_MS.items())  # the windows rows are emitted for


def _day(ms: int) -> int:
    return ms - ms % DAY_MS
