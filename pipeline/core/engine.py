"""One community's engine: dedupe -> event-time windows -> first responses -> health.

The whole state of a community is one ``CommunityEngine`` (serialized with
``to_state``/``from_state``, or saved a page at a time with ``state_writes``:
pipeline.core.state), so a Faust table keyed by community_id can hold it.
No I/O, no clock reads: the caller passes the wall clock in.

Flow of ``apply(event, wall_now_ms)``:

1. the stream clock follows the wall clock if the community was idle, and
   windows whose ``end + grace`` it passed become final;
2. an event_id already seen is a duplicate (counted, not applied);
3. an event older than stream time - ``max_lateness`` is counted as dropped,
   never applied; so is one more than ``max_future_ms`` (1 h) ahead of the wall
   clock (``future_dropped``), which would otherwise drag stream time ahead;
4. otherwise it updates its hourly and daily buckets (a final bucket gets a
   corrected final row with a higher version and ``late_events`` + 1), the
   member book (new vs returning) and the thread book (first responses);
5. changed windows are emitted (``WindowResult`` with a rising version), health
   is re-evaluated and emitted when state, flags or responsiveness change, or when
   only its figures changed and ``health_refresh_ms`` of stream time passed since
   the last snapshot emitted (so stored snapshots do not go stale).

``advance(wall_now_ms)`` does 1 and 5 without an event: this is how silent
communities close windows and become dead.

Definitions (documented here because they are choices):

- *new member* in a window: a human poster whose first post seen by this engine
  falls in that window. The engine remembers a member until they have not posted
  for ``member_memory_ms`` (default 90 d); after that they count as new again.
- *first response*: per thread, the earliest reply by an actor who is neither the
  thread's author nor a bot (staff count). Replies without ``thread_id`` use
  ``parent_id`` as the thread. Threads started by bots are not tracked.
- In a window row, ``first_response_p50/p90_s`` and ``threads_answered`` are about
  first responses that *happened in* the window; ``threads_unanswered`` and
  ``oldest_unanswered_age_s`` are the state *at the window's end*: threads started
  in the ``thread_horizon_ms`` (28 d) before the end with no first response by then.
  Both depend only on event times, so final rows do not depend on arrival order.
- Deleted users and other anonymous authors are ordinary humans to the engine (the
  Stack Exchange helper names them "deleted").
- A thread is expected to start once. A second ``thread_started`` for the same
  thread keeps the earliest start; if it names another author, a first response
  already emitted is not retracted (no retraction row exists).
- A reply *before* its thread's start (seen in real exports: answers merged in from an
  older question) answers it only if it is at most ``max_lateness`` before the start,
  and then counts as answering *at the start*: latency 0, and in the windows holding
  the start (a thread cannot be answered before it exists). An earlier reply never
  answers it. Replies wait (``Thread.held``) until their thread's start is known, at
  most 2 x ``max_lateness``, so the rule is applied the same in any arrival order.
- Health rolling views: "last 1 h" = the current hourly bucket, "24 h" = the 24
  hourly buckets up to the current one, "7 d"/"28 d" = that many daily buckets up to
  the current (partial) day, the dying baseline = the 28 daily buckets before those.
  Thread-based views (threads, first responses, SLA share) use exact event times.
  ``HealthSnapshot.unanswered_threads`` counts the backlog (threads past the SLA
  with no first response); ``oldest_unanswered_age_s`` is the oldest unanswered
  thread of any age in the 28 d horizon. ``answered_within_sla_7d`` counts threads
  of the last 7 d answered within the SLA over those answered within it or older
  than it (a thread younger than the SLA and not answered yet is not counted).
  On ``apply`` health is evaluated at most every ``health_every_ms`` of stream time
  (default 5 min); ``advance`` always evaluates. ``health()`` returns the last
  evaluation.

What is kept (and pruned once per stream hour): hourly buckets back to
max_lateness + 1 h (at least 24 h); daily buckets 35 days (posters only for the
last 28, counters after); event-id digests for max_lateness; threads open for the
28 d horizon, answered ones while a window or 7 d view can still need them;
replies held for a thread whose start is not known (or too early for it) for
2 x max_lateness; members for ``member_memory_ms``. Apart from the event-id digests
and the held replies, nothing is kept per event.

Emission: with ``WindowsConfig.emit_on_apply`` (default) every ``apply`` returns
the rows of the windows it changed. With ``emit_on_apply=False`` it only marks them
and the next ``advance`` emits one row per changed window (call it after each
batch: far fewer rows, and the same final results).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any

from pipeline.core import state
from pipeline.core.buckets import Bucket
from pipeline.core.concentration import concentration
from pipeline.core.dedupe import Deduper
from pipeline.core.health import HealthInputs, Verdict, evaluate
from pipeline.core.latency import Thread, ThreadBook, percentile_of_sorted
from pipeline.core.policy import DEFAULT_POLICY, CommunityPolicy
from pipeline.core.windows import (
    DAY_MS,
    DEFAULT_WINDOWS,
    HOUR_MS,
    SIZE_MS,
    StreamClock,
    WindowsConfig,
    is_final,
    ms_to_dt,
    window_start,
)
from pipeline.events import CanonicalEvent, Kind
from pipeline.results import FirstResponse, HealthSnapshot, WindowResult

STATE_FORMAT = 1
_DAYS_KEPT = 35  # dying baseline: the 4 weeks before the last 7 days
_DETAIL_DAYS = 28  # posters per day are kept for the 28 d views only


def cfg_early_reply_ms(config: WindowsConfig) -> int:
    """How far before its thread's start a reply still answers it (at the start, latency 0).

    max_lateness: the same span within which the engine takes events out of order. Held
    replies are kept max_lateness longer than this (the start itself may be that late).
    """
    return config.max_lateness_ms


@dataclass
class _DayCache:
    key: tuple[int, int]
    posts_7d: int = 0
    posts_28d: int = 0
    baseline_posts: int = 0
    active_7d: set[str] = field(default_factory=set)
    posters_28d: dict[str, int] = field(default_factory=dict)
    top_28d: int = 0


@dataclass
class Emissions:
    windows: list[WindowResult] = field(default_factory=list)
    first_responses: list[FirstResponse] = field(default_factory=list)
    health: list[HealthSnapshot] = field(default_factory=list)
    duplicates: int = 0
    late_applied: int = 0
    late_dropped: int = 0
    # occurred_at more than max_future_ms ahead of the wall clock: counted, never applied
    future_dropped: int = 0

    def __bool__(self) -> bool:
        return bool(self.windows or self.first_responses or self.health)


class CommunityEngine:
    def __init__(
        self,
        community_id: str,
        platform: str,
        space_id: str,
        policy: CommunityPolicy = DEFAULT_POLICY,
        windows_config: WindowsConfig = DEFAULT_WINDOWS,
    ) -> None:
        self.community_id = community_id
        self.platform = platform
        self.space_id = space_id
        self.policy = policy
        self.config = windows_config
        self.clock = StreamClock(windows_config.idle_after_ms)
        self.dedupe = Deduper(windows_config.dedupe_max_entries)
        self.buckets: dict[str, dict[int, Bucket]] = {"1h": {}, "1d": {}}
        self.members: dict[str, list[int]] = {}  # actor -> [first post ms, last post ms]
        self.threads = ThreadBook()
        self.pages = state.Pages()  # what the stored state holds in pages of its own (state.writes)
        self.last_post_ms: int | None = None
        self.verdict: Verdict | None = None
        # the last evaluation's snapshot, built only when read (see the snapshot property)
        self._snapshot_obj: HealthSnapshot | None = None
        self._snapshot_args: tuple[Any, ...] | None = None
        self.health_version = 0
        self.last_health_eval_ms: int | None = None
        # what the last emitted snapshot said, and its stream time (for the figure refresh)
        self.emitted_figures: tuple[Any, ...] | None = None
        self.emitted_at_ms: int | None = None
        # the last evaluation's figures differ from the emitted ones (a refresh is owed);
        # unknown after a restore, so assumed
        self._figures_pending = True
        self.pruned_hour: int | None = None
        # lifetime counters (also in every Emissions for the call)
        self.total_duplicates = 0
        self.total_late_applied = 0
        self.total_late_dropped = 0
        self.total_future_dropped = 0
        self._dirty: set[tuple[str, int]] = set()
        # rows computed before a prune while emit_on_apply is off; advance() returns them
        # (empty whenever the caller saves state: it saves after advance)
        self._held = Emissions()
        self._next_final_ms: int | None = None
        # aggregates of the complete days (ages >= 1) for health; rebuilt on a new day or
        # when a past day changes (_days_epoch)
        self._days_epoch = 0
        self._day_cache: _DayCache | None = None
        # members by the hour of their last post (heap of those hours), so pruning pops the
        # expired hours instead of scanning every member; built at the first prune
        self._members_by_last: dict[int, set[str]] | None = None
        self._member_hours: list[int] = []

    # ------------------------------------------------------------------ API

    def apply(self, event: CanonicalEvent, wall_now_ms: int) -> Emissions:
        em = Emissions()
        self.clock.tick(wall_now_ms)
        self._finalize()
        # the prune an advance() at this wall time would have made, before the event: the
        # idle rule may have moved stream time into a new hour, and whether a thread is
        # still known (or already settled) must not depend on whether the caller advanced
        # in between (a caller skipping idle engines until next_due_wall_ms does not)
        self._rows_before_prune(em, wall_now_ms)
        self._prune()
        occurred = event.occurred_ms
        if self.dedupe.seen(event.event_id):
            em.duplicates = 1
            self.total_duplicates += 1
        elif self.clock.now is not None and occurred < self.clock.now - self.config.max_lateness_ms:
            em.late_dropped = 1
            self.total_late_dropped += 1
        elif occurred > wall_now_ms + self.config.max_future_ms:
            em.future_dropped = 1
            self.total_future_dropped += 1
        else:
            self._apply(event, occurred, wall_now_ms, em)
            self._finalize()
        if self.config.emit_on_apply:
            self._emit_windows(em, wall_now_ms)
        else:
            self._rows_before_prune(em, wall_now_ms)
        self._prune()
        now = self.clock.now
        if now is not None and (
            self.last_health_eval_ms is None or now - self.last_health_eval_ms >= self.config.health_every_ms
        ):
            self._evaluate_health(em, wall_now_ms)
        return em

    def advance(self, wall_now_ms: int) -> Emissions:
        em = Emissions()
        if self._held.windows:
            em.windows, self._held.windows = self._held.windows, []
        self.clock.tick(wall_now_ms)
        self._finalize()
        self._emit_windows(em, wall_now_ms)
        self._prune()
        if self.clock.now is not None:
            self._evaluate_health(em, wall_now_ms)
        return em

    def next_due_wall_ms(self) -> int | None:
        """Earliest wall time at which ``advance`` can emit or change anything (None: never).

        Until then an ``advance`` changes no window, no health verdict and no emitted
        figure, so a caller ticking many idle communities may skip this one: a health
        pass then costs in proportion to the communities that can change, not to all of
        them. Conservative (never later than the first change): the earliest stream time
        at which a window becomes final or a health view moves (an hour or a day turns
        while they hold posts, a thread crosses the SLA, leaves the 7 d view or the
        horizon, the silence reaches ``dead``, a figure refresh falls due), mapped to the
        wall clock through the stream clock's idle rule.
        """
        if self._dirty or self._held:
            return 0
        due = self._next_due_stream_ms()
        return None if due is None else self.clock.wall_when(due)

    def _next_due_stream_ms(self) -> int | None:
        now = self.clock.now
        if now is None:
            return None
        t = self.policy.thresholds
        cfg = self.config
        candidates: list[int] = []
        if self._next_final_ms is not None:
            candidates.append(self._next_final_ms)
        last_post = self.last_post_ms
        if last_post is not None:
            hour = window_start(now, "1h")
            if last_post >= hour - 24 * HOUR_MS:  # a post is in the 1 h / 24 h views
                candidates.append(hour + HOUR_MS)
            today = window_start(now, "1d")
            if last_post >= today - (_DAYS_KEPT + 1) * DAY_MS:  # posts in the daily views
                candidates.append(today + DAY_MS)
            dead_at = last_post + math.floor(t.dead_after_s * 1000)
            if dead_at > now:
                candidates.append(dead_at)
        if self._figures_pending and self.emitted_at_ms is not None:
            candidates.append(self.emitted_at_ms + cfg.health_refresh_ms)
        # a thread crosses the SLA, leaves the 7 d views, or leaves the horizon
        crossing = self.threads.next_start_crossing(
            now, (math.floor(t.sla_s * 1000), 7 * DAY_MS, cfg.thread_horizon_ms + 1)
        )
        if crossing is not None:
            candidates.append(crossing)
        return min(candidates) if candidates else None

    def health(self) -> HealthSnapshot:
        """The snapshot of the last evaluation (a community with no event yet: a fresh one)."""
        if self.snapshot is not None:
            return self.snapshot
        return self._snapshot(self._health_inputs(), self._verdict_for_empty(), 0)

    @property
    def stream_time_ms(self) -> int | None:
        return self.clock.now

    # ------------------------------------------------------------- applying

    def _apply(self, event: CanonicalEvent, occurred: int, wall_now_ms: int, em: Emissions) -> None:
        now = self.clock.now
        late = now is not None and is_final(window_start(occurred, "1h"), "1h", now, self.config)
        self.clock.observe(occurred, wall_now_ms)
        now = self.clock.now
        assert now is not None
        self.dedupe.add(event.event_id, occurred)
        if late:
            em.late_applied = 1
            self.total_late_applied += 1
        human = event.is_human
        actor = event.actor_id
        for size in ("1h", "1d"):
            start = window_start(occurred, size)
            bucket = self.buckets[size].get(start)
            if bucket is None:
                bucket = self.buckets[size][start] = Bucket(start)
                bucket.final = is_final(start, size, now, self.config)
                if not bucket.final:
                    self._note_pending(start, size)
            bucket.add(event.kind, actor, human)
            if size == "1d" and start < window_start(now, "1d"):
                self._days_epoch += 1
            if bucket.final:
                bucket.late_events += 1
            self._mark(size, start)
        if not human or not event.is_post:
            return
        self._note_member(actor, occurred)
        if self.last_post_ms is None or occurred > self.last_post_ms:
            self.last_post_ms = occurred
        if event.kind == Kind.THREAD_STARTED:
            tid = event.thread_id or event.event_id
            thread = self.threads.get(tid)
            old_start, old_answered = thread.start_ms, thread.answered_at()
            thread.set_start(actor, occurred, cfg_early_reply_ms(self.config))
        else:
            reply_tid = event.thread_id or event.parent_id
            if reply_tid is None:
                return
            tid = reply_tid
            thread = self.threads.get(tid)
            old_start, old_answered = thread.start_ms, thread.answered_at()
            thread.add_response(actor, occurred, cfg_early_reply_ms(self.config))
        self.threads.reindex(tid, thread, old_start, old_answered)
        self._thread_changed(tid, thread, occurred, em)

    def _note_member(self, actor: str, occurred: int) -> None:
        # hour resolution is exact for "first post in this window" (windows are whole hours)
        occurred -= occurred % HOUR_MS
        seen = self.members.get(actor)
        if seen is None:
            self.members[actor] = [occurred, occurred]
            self._index_member(actor, None, occurred)
            return
        first, last = seen
        if occurred < first:
            # the member's first window changes: the window(s) that counted them new must too
            for size in ("1h", "1d"):
                self._mark(size, window_start(first, size))
            seen[0] = occurred
        if occurred > last:
            seen[1] = occurred
            self._index_member(actor, last, occurred)

    def _index_member(self, actor: str, old_last: int | None, last: int) -> None:
        index = self._members_by_last
        if index is None:
            return
        if old_last is not None:
            old = index.get(old_last)
            if old is not None:
                old.discard(actor)
        actors = index.get(last)
        if actors is None:
            actors = index[last] = set()
            heapq.heappush(self._member_hours, last)
        actors.add(actor)

    def _forget_members(self, floor_ms: int) -> None:
        """Forget members whose last post is before ``floor_ms`` (same as scanning them all)."""
        index = self._members_by_last
        if index is None:
            index = self._members_by_last = {}
            for actor, (_, last) in self.members.items():
                index.setdefault(last, set()).add(actor)
            self._member_hours = list(index)
            heapq.heapify(self._member_hours)
        hours = self._member_hours
        while hours and hours[0] < floor_ms:
            for actor in index.pop(heapq.heappop(hours), ()):
                del self.members[actor]

    def _thread_changed(
        self,
        tid: str,
        thread: Thread,
        occurred: int,
        em: Emissions,
    ) -> None:
        fr = thread.first_response()
        # windows ending after the change see a different "unanswered at end", and when the
        # first response changed, the windows holding the old and the new answer see a
        # different latency. Both answers count at or after ``occurred`` (a reply answers at
        # the later of its time and the start, and the start moves only earlier), so the
        # windows ending after ``occurred`` are all the windows this event can change
        for size, by_start in self.buckets.items():
            step = SIZE_MS[size]
            for start in by_start:
                if start + step > occurred:
                    self._mark(size, start)
        if fr is None or thread.start_ms is None or thread.author is None:
            return
        responder, at = fr
        # a second report of the thread's start may move it earlier: that changes the row too
        if (responder, at, thread.start_ms) == (
            thread.emitted_actor,
            thread.emitted_ms,
            thread.emitted_start,
        ):
            return
        thread.emitted_version += 1
        thread.emitted_actor, thread.emitted_ms = responder, at
        thread.emitted_start = thread.start_ms
        em.first_responses.append(
            FirstResponse(
                community_id=self.community_id,
                thread_id=tid,
                thread_author_id=thread.author,
                thread_started_at=ms_to_dt(thread.start_ms),
                responder_id=responder,
                responded_at=ms_to_dt(at),
                latency_s=max(0, at - thread.start_ms) / 1000,
                version=thread.emitted_version,
            )
        )

    def _mark(self, size: str, start: int) -> None:
        bucket = self.buckets[size].get(start)
        if bucket is not None:
            bucket.dirty = True
            self._dirty.add((size, start))

    # ------------------------------------------------------------- finality

    def _note_pending(self, start: int, size: str) -> None:
        due = start + SIZE_MS[size] + self.config.grace_ms(size)
        if self._next_final_ms is None or due < self._next_final_ms:
            self._next_final_ms = due

    def _finalize(self) -> None:
        now = self.clock.now
        if now is None or self._next_final_ms is None or now < self._next_final_ms:
            return
        self._next_final_ms = None
        for size, by_start in self.buckets.items():
            for start, bucket in by_start.items():
                if bucket.final:
                    continue
                if is_final(start, size, now, self.config):
                    bucket.final = True
                    self._mark(size, start)
                else:
                    self._note_pending(start, size)

    # ------------------------------------------------------------- emitting

    def _emit_windows(self, em: Emissions, wall_now_ms: int) -> None:
        if not self._dirty:
            return
        for size, start in sorted(self._dirty, key=lambda k: (k[1], k[0])):
            bucket = self.buckets[size].get(start)
            if bucket is None or not bucket.dirty:
                continue
            bucket.version += 1
            bucket.dirty = False
            em.windows.append(self._row(size, bucket, wall_now_ms))
        self._dirty.clear()

    def _row(self, size: str, b: Bucket, wall_now_ms: int) -> WindowResult:
        start, end = b.start_ms, b.start_ms + SIZE_MS[size]
        posters = b.posters
        member = self.members.get
        new = 0
        for actor in posters:
            seen = member(actor)
            if seen is not None and start <= seen[0] < end:
                new += 1
        shares = concentration(posters.values())
        # first responses that happened in the window (ms, in order); "unanswered" as of its end
        latencies = self.threads.latencies_in(size, start)
        unanswered, oldest = self.threads.unanswered_at(end, self.config.thread_horizon_ms)
        return WindowResult(
            community_id=self.community_id,
            platform=self.platform,
            space_id=self.space_id,
            window=size,  # type: ignore[arg-type]
            window_start=ms_to_dt(start),
            window_end=ms_to_dt(end),
            version=b.version,
            final=b.final,
            threads_started=b.threads,
            replies=b.replies,
            reactions=b.reactions,
            joins=b.joins,
            leaves=b.leaves,
            answers_accepted=b.accepted,
            other_events=b.other,
            posts=b.posts,
            active_members=len(posters),
            new_members=new,
            returning_members=len(posters) - new,
            replies_per_thread=b.replies / b.threads if b.threads else 0.0,
            top1_share=shares.top1_share,
            top3_share=shares.top3_share,
            gini=shares.gini,
            absence_factor=shares.absence_factor,
            first_response_p50_s=percentile_of_sorted(latencies, 0.5, 1000),
            first_response_p90_s=percentile_of_sorted(latencies, 0.9, 1000),
            threads_answered=len(latencies),
            threads_unanswered=unanswered,
            oldest_unanswered_age_s=(end - oldest) / 1000 if oldest is not None else None,
            bot_posts=b.bot_posts,
            late_events=b.late_events,
            emitted_at=ms_to_dt(wall_now_ms),
        )

    # -------------------------------------------------------------- pruning

    def _rows_before_prune(self, em: Emissions, wall_now_ms: int) -> None:
        if self._prune_due() and self._dirty and self._prune_changes_rows():
            # a row needs threads that pruning forgets (e.g. windows the clock just made
            # final): compute the changed rows now, into ``em`` or, when emission is
            # deferred, for the next advance(), so results never depend on when it comes
            # (only when the prune would forget a thread a row can see: most hours it does not)
            self._emit_windows(em if self.config.emit_on_apply else self._held, wall_now_ms)

    def _prune_due(self) -> bool:
        now = self.clock.now
        return now is not None and window_start(now, "1h") != self.pruned_hour

    def _thread_cutoffs(self, now: int) -> dict[str, int]:
        cfg = self.config
        lateness = cfg.max_lateness_ms
        touchable = now - lateness
        return {
            # a thread change reaches back max_lateness from an event that is itself up to
            # max_lateness old, into a window of up to a day: a first response before that is
            # in no window that can still be emitted, nor changes its "unanswered at end"
            "answered_before_ms": touchable - lateness - DAY_MS - HOUR_MS,
            "started_before_ms": now - 8 * DAY_MS,  # the 7 d health views
            "open_before_ms": touchable - cfg.thread_horizon_ms - DAY_MS,
            # a start that can still arrive is at most max_lateness old: it admits no reply
            # more than max_lateness + cfg_early_reply_ms before now
            "held_before_ms": touchable - cfg_early_reply_ms(cfg),
        }

    def _prune_changes_rows(self) -> bool:
        """Whether the coming prune forgets a thread a window row sees (rows see the open and
        the recently answered threads; members and dirty buckets in reach are never pruned)."""
        now = self.clock.now
        if now is None:
            return False
        cut = self._thread_cutoffs(window_start(now, "1h"))  # as _prune computes them
        return self.threads.prune_forgets_row_threads(cut["answered_before_ms"], cut["open_before_ms"])

    def _prune(self) -> None:
        """Forget what neither max_lateness nor the rolling views can need (once per hour)."""
        now = self.clock.now
        if now is None:
            return
        hour = window_start(now, "1h")
        if self.pruned_hour == hour:
            return
        self.pruned_hour = hour
        # as of the hour's start, not of this call's stream time: the prune of an hour then
        # forgets the same whenever in the hour it runs (a caller that advances less often,
        # or only when due, gets the same results; keeping up to an hour more is harmless)
        now = hour
        cfg = self.config
        lateness = cfg.max_lateness_ms
        # a bucket can still change while an event inside it is within max_lateness
        touchable = now - lateness
        hours = self.buckets["1h"]
        # an event can reach back max_lateness from its own time, and arrive up to a grace
        # after the clock passed it: keep an hour more than max_lateness (and the 24 h view)
        keep_hours_from = min(touchable - HOUR_MS, hour - 23 * HOUR_MS)
        for start in [s for s, b in hours.items() if s + HOUR_MS <= keep_hours_from and not b.dirty]:
            del hours[start]
        days = self.buckets["1d"]
        today = window_start(now, "1d")
        for start, b in list(days.items()):
            if b.dirty or start + DAY_MS > touchable:
                continue
            age_days = (today - start) // DAY_MS
            if age_days >= _DAYS_KEPT:
                del days[start]
            elif age_days >= _DETAIL_DAYS and not b.compacted:
                b.compact()
        self.dedupe.prune(touchable)
        self.threads.prune(**self._thread_cutoffs(now))
        # members are referenced by the daily buckets of the last 28 d: never forget sooner
        member_floor = now - max(cfg.member_memory_ms, (_DETAIL_DAYS + 2) * DAY_MS)
        self._forget_members(member_floor)

    # --------------------------------------------------------------- health

    def _complete_days(self, today: int) -> _DayCache:
        key = (today, self._days_epoch)
        cache = self._day_cache
        if cache is not None and cache.key == key:
            return cache
        cache = _DayCache(key)
        for start, b in self.buckets["1d"].items():
            age = (today - start) // DAY_MS
            if age < 1:
                continue
            if age < 7:
                cache.posts_7d += b.posts
                cache.active_7d.update(b.posters)
            elif age < _DAYS_KEPT:
                cache.baseline_posts += b.posts
            if age < _DETAIL_DAYS:
                cache.posts_28d += b.posts
                merged = cache.posters_28d
                for actor, n in b.posters.items():
                    merged[actor] = merged.get(actor, 0) + n
        cache.top_28d = max(cache.posters_28d.values(), default=0)
        self._day_cache = cache
        return cache

    def _health_inputs(self) -> dict[str, Any]:
        now = self.clock.now
        t = self.policy.thresholds
        if now is None:
            return {
                "inputs": HealthInputs(None, 0, 0.0, 0, 0.0, 0, None, None, 0),
                "posts_1h": 0,
                "posts_24h": 0,
                "active_7d": 0,
                "unanswered_oldest_s": None,
            }
        hour = window_start(now, "1h")
        posts_1h = 0
        posts_24h = 0
        for start, b in self.buckets["1h"].items():
            if hour - 23 * HOUR_MS <= start <= hour:
                posts_24h += b.posts
                if start == hour:
                    posts_1h = b.posts
        # rolling views = the complete days (cached) + the current day's bucket
        today = window_start(now, "1d")
        days = self._complete_days(today)
        current = self.buckets["1d"].get(today)
        posts_7d, posts_28d, active_7d, top = days.posts_7d, days.posts_28d, len(days.active_7d), 0
        top = days.top_28d
        if current is not None:
            posts_7d += current.posts
            posts_28d += current.posts
            for actor, n in current.posters.items():
                if actor not in days.active_7d:
                    active_7d += 1
                top = max(top, days.posters_28d.get(actor, 0) + n)
        top1 = top / posts_28d if posts_28d else 0.0
        sla_ms = t.sla_s * 1000
        week = self.threads.seven_days(now - 7 * DAY_MS + 1, now, sla_ms)
        backlog, oldest = self.threads.backlog(now, self.config.thread_horizon_ms, sla_ms)
        silence = (now - self.last_post_ms) / 1000 if self.last_post_ms is not None else None
        inputs = HealthInputs(
            silence_s=silence,
            posts_7d=posts_7d,
            baseline_posts_per_week=days.baseline_posts / 4,
            posts_28d=posts_28d,
            top1_share_28d=top1,
            threads_started_7d=week.started,
            first_response_p50_7d_s=percentile_of_sorted(week.latencies_ms, 0.5, 1000),
            answered_within_sla_7d=week.within_sla / week.eligible if week.eligible else None,
            backlog_threads=backlog,
        )
        return {
            "inputs": inputs,
            "posts_1h": posts_1h,
            "posts_24h": posts_24h,
            "active_7d": active_7d,
            "unanswered_oldest_s": (now - oldest) / 1000 if oldest is not None else None,
        }

    def _verdict_for_empty(self) -> Verdict:
        return Verdict("healthy", (), "no_demand")

    def _evaluate_health(self, em: Emissions, wall_now_ms: int) -> None:
        views = self._health_inputs()
        verdict = evaluate(views["inputs"], self.policy, self.verdict)
        self.last_health_eval_ms = self.clock.now
        previous = self.verdict
        changed = previous is None or (
            verdict.state,
            verdict.flags,
            verdict.responsiveness,
        ) != (previous.state, previous.flags, previous.responsiveness)
        self.verdict = verdict
        figures = _figures(views)
        now = self.clock.now if self.clock.now is not None else 0
        refresh = (
            figures != self.emitted_figures
            and self.emitted_at_ms is not None
            and now - self.emitted_at_ms >= self.config.health_refresh_ms
        )
        emit = changed or refresh
        if emit:
            self.health_version += 1
            self.emitted_figures, self.emitted_at_ms = figures, now
        self._figures_pending = figures != self.emitted_figures
        args = (views, verdict, self.health_version, previous, wall_now_ms, self.clock.now, self.last_post_ms)
        if emit:
            self.snapshot = snap = self._snapshot(*args)
            em.health.append(snap)
        else:
            # most evaluations change nothing: keep what the snapshot needs, build it if read
            self._snapshot_obj, self._snapshot_args = None, args

    @property
    def snapshot(self) -> HealthSnapshot | None:
        """The snapshot of the last evaluation (None before the first)."""
        if self._snapshot_obj is None and self._snapshot_args is not None:
            self._snapshot_obj = self._snapshot(*self._snapshot_args)
            self._snapshot_args = None
        return self._snapshot_obj

    @snapshot.setter
    def snapshot(self, value: HealthSnapshot | None) -> None:
        self._snapshot_obj, self._snapshot_args = value, None

    def _snapshot(
        self,
        views: dict[str, Any],
        verdict: Verdict,
        version: int,
        previous: Verdict | None = None,
        wall_now_ms: int | None = None,
        stream_now_ms: int | None = None,
        last_post_ms: int | None = None,
    ) -> HealthSnapshot:
        """``stream_now_ms``/``last_post_ms``: as of the evaluation (the engine's own when absent)."""
        i: HealthInputs = views["inputs"]
        if stream_now_ms is None:
            stream_now_ms, last_post_ms = self.clock.now, self.last_post_ms
        now = stream_now_ms if stream_now_ms is not None else 0
        return HealthSnapshot(
            community_id=self.community_id,
            platform=self.platform,
            space_id=self.space_id,
            community_type=self.policy.community_type,
            state=verdict.state,
            previous_state=previous.state if previous else None,
            flags=list(verdict.flags),
            responsiveness=verdict.responsiveness,
            stream_time=ms_to_dt(now),
            evaluated_at=ms_to_dt(wall_now_ms if wall_now_ms is not None else now),
            posts_1h=views["posts_1h"],
            posts_24h=views["posts_24h"],
            posts_7d=i.posts_7d,
            posts_28d=i.posts_28d,
            baseline_posts_per_week=i.baseline_posts_per_week,
            active_members_7d=views["active_7d"],
            top1_share_28d=i.top1_share_28d,
            threads_started_7d=i.threads_started_7d,
            first_response_p50_7d_s=i.first_response_p50_7d_s,
            answered_within_sla_7d=i.answered_within_sla_7d,
            unanswered_threads=i.backlog_threads,
            oldest_unanswered_age_s=views["unanswered_oldest_s"],
            last_post_at=ms_to_dt(last_post_ms) if last_post_ms is not None else None,
            version=max(1, version),
        )

    # ---------------------------------------------------------------- state

    def to_state(self) -> bytes:
        """The whole state in one record (see ``state_writes`` for what the worker saves)."""
        return state.encode(self)

    def state_writes(self) -> list[state.Write]:
        """The records that bring the stored state up to this engine: only what changed since
        the last call, for a busy community (pipeline.core.state)."""
        return state.writes(self)

    @classmethod
    def from_state(
        cls, data: bytes, policy: CommunityPolicy = DEFAULT_POLICY, read: state.ReadRecord | None = None
    ) -> CommunityEngine:
        """The engine of a state record; ``read`` gives the records of the pages it names."""
        return state.decode(data, policy, read)


def _figures(views: dict[str, Any]) -> tuple[Any, ...]:
    """The figures a report shows; ages and times are left out (they change every tick)."""
    i: HealthInputs = views["inputs"]
    return (
        views["posts_1h"],
        views["posts_24h"],
        i.posts_7d,
        i.posts_28d,
        i.baseline_posts_per_week,
        views["active_7d"],
        i.top1_share_28d,
        i.threads_started_7d,
        i.first_response_p50_7d_s,
        i.answered_within_sla_7d,
        i.backlog_threads,
    )


__all__ = ["CommunityEngine", "Emissions"]
