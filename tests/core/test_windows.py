"""Window alignment and the per-community stream clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.windows import (
    DAY_MS,
    DEFAULT_WINDOWS,
    HOUR_MS,
    StreamClock,
    is_final,
    window_end,
    window_start,
)

times = st.integers(min_value=-(10**12), max_value=4 * 10**12)


@given(times, st.sampled_from(["1h", "1d"]))
def test_every_time_falls_in_exactly_its_aligned_window(ts: int, size: str) -> None:
    start = window_start(ts, size)
    step = HOUR_MS if size == "1h" else DAY_MS
    assert start % step == 0
    assert start <= ts < window_end(start, size)


@given(times)
def test_hours_nest_in_days(ts: int) -> None:
    day = window_start(ts, "1d")
    assert day <= window_start(ts, "1h") < day + DAY_MS


def test_final_exactly_at_end_plus_grace() -> None:
    start = 10 * DAY_MS
    end = start + HOUR_MS
    grace = DEFAULT_WINDOWS.hour_grace_ms
    assert not is_final(start, "1h", end + grace - 1, DEFAULT_WINDOWS)
    assert is_final(start, "1h", end + grace, DEFAULT_WINDOWS)
    assert not is_final(start, "1d", start + DAY_MS + DEFAULT_WINDOWS.day_grace_ms - 1, DEFAULT_WINDOWS)


def test_clock_follows_events_and_then_the_wall_clock_when_idle() -> None:
    clock = StreamClock(idle_after_ms=600_000)
    clock.tick(123)  # nothing seen: no time at all
    assert clock.now is None
    clock.observe(1_000_000, wall_now_ms=5_000_000)
    assert clock.now == 1_000_000
    clock.observe(900_000, wall_now_ms=5_000_100)  # an older event never moves it back
    assert clock.now == 1_000_000
    clock.tick(5_000_100 + 600_000)  # idle for exactly idle_after: not yet
    assert clock.now == 1_000_000
    clock.tick(5_000_100 + 600_000 + 3_600_000)  # idle: the wall clock minus idle_after
    assert clock.now == 5_000_100 + 3_600_000
    clock.tick(0)  # wall clock going back never moves it back either
    assert clock.now == 5_000_100 + 3_600_000


def test_idle_clock_ahead_of_the_wall_keeps_its_own_lead() -> None:
    # events stamped slightly ahead of the wall clock (source skew): idle time adds to them
    clock = StreamClock(idle_after_ms=600_000)
    clock.observe(5_060_000, wall_now_ms=5_000_000)
    clock.tick(5_000_000 + 600_000 + 1_000)
    assert clock.now == 5_060_000 + 1_000


def test_replayed_history_keeps_its_own_time() -> None:
    # events from 2011 applied in 2026: the clock follows event time, not the wall clock
    clock = StreamClock(idle_after_ms=600_000)
    wall = 1_800_000_000_000
    for i in range(5):
        clock.observe(1_300_000_000_000 + i * 60_000, wall + i)
        clock.tick(wall + i)
    assert clock.now == 1_300_000_000_000 + 4 * 60_000
    # once the import stops, the community catches up with the present (minus idle_after)
    clock.tick(wall + 4 + 600_001)
    assert clock.now == wall + 4 + 1


@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(0, 10**13), st.integers(0, 10**13)),
        min_size=1,
        max_size=40,
    )
)
def test_clock_is_monotone_and_never_behind_its_events(steps) -> None:
    clock = StreamClock(idle_after_ms=600_000)
    previous = None
    for is_event, occurred, wall in steps:
        if is_event:
            clock.observe(occurred, wall)
        else:
            clock.tick(wall)
        if previous is not None:
            assert clock.now is not None and clock.now >= previous
        previous = clock.now
        if clock.max_occurred_ms is not None:
            assert clock.now is not None and clock.now >= clock.max_occurred_ms
