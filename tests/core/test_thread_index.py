"""The thread book's sorted indexes against brute force over its own records.

Window rows and health read the indexes (binary searches) instead of passing over every
thread the book keeps. Whatever the arrival order, pruning, settling or restoring, the
indexes must hold exactly what the records say, and the figures built on them must be
the ones a pass over the records gives (the definitions in ``pipeline.core.engine``).
"""

from __future__ import annotations

from collections.abc import Iterable

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.engine import CommunityEngine
from pipeline.core.latency import ThreadBook, percentile
from pipeline.core.windows import SIZE_MS, WindowsConfig, window_start
from pipeline.results import WindowResult
from tests.core.corekit import DAY, HOUR, MIN, T0, engine, ev

# short spans, so that a few dozen events reach pruning, settling and the end of the horizon
CONFIG = WindowsConfig(max_lateness_ms=2 * HOUR, thread_horizon_ms=3 * DAY, emit_on_apply=False)

# (kind, thread, actor, minutes since the previous event: may go back, i.e. arrive late).
# Quarter hours, so that events often fall on window edges and exactly on the SLA.
steps = st.lists(
    st.tuples(
        st.sampled_from(["thread_started", "reply", "reply", "advance", "restore"]),
        st.integers(0, 12),
        st.integers(0, 3),
        st.integers(-10, 64).map(lambda quarters: quarters * 15),
    ),
    min_size=5,
    max_size=80,
)


def _records(book: ThreadBook) -> dict[str, list]:  # type: ignore[type-arg]
    """Every index, rebuilt from the records (threads, their sets, settled)."""
    threads = book.threads
    starts = [t.start_ms for t in threads.values() if t.start_ms is not None]
    answered = [
        (t.start_ms, at - t.start_ms)
        for t in threads.values()
        if t.start_ms is not None and (at := t.answered_at()) is not None
    ]
    for pairs in book.settled.values():
        starts += [s for s, _ in pairs]
        answered += [(s, at - s) for s, at in pairs]
    recent = [(threads[tid].answered_at(), threads[tid].start_ms) for tid in book.recent]
    windows: dict[tuple[str, int], list[int]] = {}
    for at, start in recent:
        assert at is not None and start is not None
        for size in SIZE_MS:
            windows.setdefault((size, window_start(at, size)), []).append(at - start)
    out = {
        "starts": sorted(starts),
        "open_starts": sorted(threads[tid].start_ms for tid in book.open),  # type: ignore[type-var]
        "answers": sorted(recent),  # type: ignore[type-var]
        "answered": sorted(answered),
        "windows": sorted((k, sorted(v)) for k, v in windows.items()),
    }
    if book.health_from is not None:
        out["health"] = sorted(lat for s, lat in answered if s >= book.health_from)
    return out


def _indexes(book: ThreadBook) -> dict[str, list]:  # type: ignore[type-arg]
    out = {
        "starts": book.starts,
        "open_starts": book.open_starts,
        "answers": book.answers,
        "answered": book.answered,
        "windows": sorted((k, v) for k, v in book.window_latencies.items()),
    }
    if book.health_from is not None:
        out["health"] = book.health_latencies
    return out


def _check_windows(eng: CommunityEngine) -> None:
    """Each kept window's thread figures as one pass over the open and recent threads gives them
    (rows read these; rows computed just before a prune saw the threads it then forgot)."""
    book = eng.threads
    seen = [
        (t.start_ms, t.answered_at())
        for tid in book.open | book.recent
        if (t := book.threads[tid]).start_ms is not None
    ]
    for size, buckets in eng.buckets.items():
        for start in buckets:
            end = start + SIZE_MS[size]
            latencies = sorted(r - s for s, r in seen if r is not None and start <= r < end)  # type: ignore[operator]
            waiting = [s for s, r in seen if end - CONFIG.thread_horizon_ms <= s < end and (r is None or r >= end)]  # type: ignore[operator]
            assert book.latencies_in(size, start) == latencies
            assert book.unanswered_at(end, CONFIG.thread_horizon_ms) == (len(waiting), min(waiting, default=None))  # type: ignore[type-var]


def _check_rows(rows: Iterable[WindowResult]) -> None:
    """Rows put the latencies together as ``percentile`` does from seconds."""
    for row in rows:
        if row.threads_answered:
            assert row.first_response_p50_s is not None and row.first_response_p90_s is not None
            assert row.first_response_p50_s <= row.first_response_p90_s
        else:
            assert row.first_response_p50_s is None


def _check_health(eng: CommunityEngine, *, snapshot: bool) -> None:
    """Health thread figures as one pass over every thread and settled pair gives them: from the
    book at the engine's stream time and, with ``snapshot`` (just after an evaluation), in it."""
    now = eng.stream_time_ms
    if now is None:
        return
    book = eng.threads
    pairs = [(t.start_ms, t.answered_at()) for t in book.threads.values() if t.start_ms is not None]
    pairs += [(s, at) for day in book.settled.values() for s, at in day]
    sla = eng.policy.thresholds.sla_s * 1000
    week = [(s, r) for s, r in pairs if s >= now - 7 * DAY + 1]
    latencies = sorted(r - s for s, r in week if r is not None)  # type: ignore[operator]
    within = sum(1 for lat in latencies if lat <= sla)
    eligible = sum(1 for s, r in week if (r is not None and r - s <= sla) or now - s >= sla)  # type: ignore[operator]
    opens = [s for tid in book.open if (s := book.threads[tid].start_ms) is not None]
    in_horizon = [s for s in opens if s >= now - CONFIG.thread_horizon_ms]
    backlog = sum(1 for s in in_horizon if now - s >= sla)
    offsets = (int(sla), 7 * DAY, CONFIG.thread_horizon_ms + 1)
    due = [s + o for s, _ in pairs for o in offsets if s + o > now]
    assert book.next_start_crossing(now, offsets) == (min(due) if due else None)
    if snapshot:
        snap = eng.snapshot
        assert snap is not None and eng.last_health_eval_ms == now
        assert snap.threads_started_7d == len(week)
        assert snap.first_response_p50_7d_s == percentile([lat / 1000 for lat in latencies], 0.5)
        assert snap.answered_within_sla_7d == (within / eligible if eligible else None)
        assert snap.unanswered_threads == backlog
        assert snap.oldest_unanswered_age_s == ((now - min(in_horizon)) / 1000 if in_horizon else None)
    # (after the snapshot: this moves the book's 7 d view to now)
    view = book.seven_days(now - 7 * DAY + 1, now, sla)
    assert (view.started, view.latencies_ms, view.within_sla, view.eligible) == (len(week), latencies, within, eligible)
    assert book.backlog(now, CONFIG.thread_horizon_ms, sla) == (backlog, min(in_horizon, default=None))


@settings(max_examples=300, deadline=None)
@given(steps)
def test_indexes_and_the_figures_on_them_match_a_pass_over_the_records(plan: list[tuple[str, int, int, int]]) -> None:
    eng = engine(config=CONFIG)
    at = wall = T0
    for kind, thread, actor, minutes in plan:
        at += minutes * MIN
        wall = max(wall, at)
        if kind == "restore":
            eng = CommunityEngine.from_state(eng.to_state(), eng.policy)
        elif kind == "advance":
            wall += minutes * MIN if minutes > 0 else 0
            _check_rows(eng.advance(wall).windows)
            _check_health(eng, snapshot=True)
        else:
            eng.apply(ev(kind, f"a{actor}", at, thread=f"t{thread}"), wall)
        assert _indexes(eng.threads) == _records(eng.threads)
        _check_windows(eng)
        _check_health(eng, snapshot=False)
    _check_rows(eng.advance(wall + 1).windows)
    _check_health(eng, snapshot=True)
    assert _indexes(eng.threads) == _records(eng.threads)


def test_a_long_run_prunes_settles_and_keeps_the_indexes_in_step() -> None:
    # 20 days, a thread every 2 hours answered 1-30 hours later by turns: threads settle,
    # leave the 7 d views, and open ones leave the horizon
    eng = engine(config=CONFIG)
    checked = 0
    for n in range(240):
        start = T0 + n * 2 * HOUR
        eng.apply(ev("thread_started", "author", start, thread=f"t{n}"), start)
        if n >= 15 and n % 3:
            answered = n - 15
            eng.apply(ev("reply", "helper", start + MIN, thread=f"t{answered}"), start + MIN)
        if n % 12 == 0:
            _check_rows(eng.advance(start + 2 * MIN).windows)
            _check_health(eng, snapshot=True)
            checked += 1
        assert _indexes(eng.threads) == _records(eng.threads)
        _check_windows(eng)
    assert checked == 20
    assert eng.threads.settled, "nothing settled: the run is too short to test settling"
    assert len(eng.threads.starts) < 240, "nothing was pruned"


def test_the_sla_edges_count_as_in_a_pass_over_the_records() -> None:
    # answered exactly at the SLA (within it), evaluated exactly one SLA after the start
    # (eligible once, not twice), beside a thread still open at the same age
    eng = engine(config=CONFIG)
    sla = int(eng.policy.thresholds.sla_s * 1000)
    eng.apply(ev("thread_started", "author", T0, thread="answered"), T0)
    eng.apply(ev("thread_started", "author", T0, thread="open"), T0)
    eng.apply(ev("reply", "helper", T0 + sla, thread="answered"), T0 + sla)
    eng.advance(T0 + sla)
    assert eng.stream_time_ms == T0 + sla
    _check_health(eng, snapshot=True)
    view = eng.threads.seven_days(T0 + sla - 7 * DAY + 1, T0 + sla, sla)
    assert (view.started, view.within_sla, view.eligible) == (2, 1, 2)
