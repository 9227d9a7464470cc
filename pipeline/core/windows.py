"""Window assignment, finality and the per-community stream clock.

Windows are fixed, UTC-aligned, in event time: 1 hour and 1 day. A window is
*final* once stream time reaches ``window_end + grace``. Stream time belongs to
one community: the highest ``occurred_at`` it has seen; once the community is
idle it follows the wall clock (see ``StreamClock``), so quiet communities close
their windows and a silent one is seen as silent.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
MINUTE_MS = 60_000

Size = Literal["1h", "1d"]
SIZES: tuple[Size, ...] = ("1h", "1d")
SIZE_MS: dict[str, int] = {"1h": HOUR_MS, "1d": DAY_MS}


@dataclass(frozen=True)
class WindowsConfig:
    """Time rules of one engine. All durations in milliseconds."""

    hour_grace_ms: int = 10 * MINUTE_MS
    day_grace_ms: int = HOUR_MS
    # events older than stream time - max_lateness are counted and never applied
    max_lateness_ms: int = DAY_MS
    # events more than this ahead of the wall clock are counted and never applied: one bad
    # timestamp would otherwise move the community's stream time ahead and make every
    # ordinary event after it late (platform clock skew is seconds, not hours)
    max_future_ms: int = HOUR_MS
    # how long a community may receive nothing before its clock follows the wall clock
    idle_after_ms: int = 10 * MINUTE_MS
    # "new member" memory: a member unseen (no post) for longer is forgotten, and new again
    member_memory_ms: int = 90 * DAY_MS
    # unanswered threads are tracked this long after they start
    thread_horizon_ms: int = 28 * DAY_MS
    # safety bound on remembered event ids per community (the oldest go first)
    dedupe_max_entries: int = 200_000
    # health is re-evaluated on apply() at most once per this much stream time (advance()
    # always evaluates); 0 = on every event. Health moves over hours and days; this bounds
    # its cost when history is replayed (stream time then moves minutes per event)
    health_every_ms: int = 5 * MINUTE_MS
    # a snapshot whose state, flags and responsiveness did not change is still emitted when
    # its figures (posts, members, shares, latency, backlog) changed, at most once per this
    # much stream time: stored snapshots stay current for reports without a row per event
    health_refresh_ms: int = 10 * MINUTE_MS
    # False: apply() only marks windows changed; the next advance() emits them (one row per
    # window per batch instead of per event)
    emit_on_apply: bool = True

    def grace_ms(self, size: str) -> int:
        return self.hour_grace_ms if size == "1h" else self.day_grace_ms

    def to_plain(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_plain(cls, data: dict[str, Any]) -> WindowsConfig:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


DEFAULT_WINDOWS = WindowsConfig()


def window_start(ts_ms: int, size: str) -> int:
    """Start (ms) of the UTC-aligned window of ``size`` holding ``ts_ms``."""
    step = SIZE_MS[size]
    return ts_ms - ts_ms % step  # Python's % is floor-mod: right for times before 1970 too


def window_end(start_ms: int, size: str) -> int:
    return start_ms + SIZE_MS[size]


def is_final(start_ms: int, size: str, stream_time_ms: int, config: WindowsConfig) -> bool:
    return stream_time_ms >= window_end(start_ms, size) + config.grace_ms(size)


def ms_to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def dt_to_ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


class StreamClock:
    """Per-community stream time.

    ``now`` is monotone: the highest ``occurred_at`` applied while events keep arriving.
    Once nothing has arrived for ``idle_after_ms`` of wall time, it follows the wall
    clock minus ``idle_after_ms`` (DESIGN: "advances with the wall clock, minus grace"),
    or the last event plus the idle time when that is later (a source clock slightly
    ahead). While a history is being imported its events keep arriving, so it keeps its
    own event time and the rest of the import is not late; once the import stops, the
    community catches up with the present: an old history whose last post is weeks ago
    is seen as dead at once, which is what an operator needs to know.
    """

    __slots__ = ("idle_after_ms", "last_arrival_wall_ms", "max_occurred_ms", "now")

    def __init__(self, idle_after_ms: int) -> None:
        self.idle_after_ms = idle_after_ms
        self.now: int | None = None
        self.max_occurred_ms: int | None = None
        self.last_arrival_wall_ms: int | None = None

    def tick(self, wall_now_ms: int) -> None:
        if self.max_occurred_ms is None or self.last_arrival_wall_ms is None:
            return
        idle = wall_now_ms - self.last_arrival_wall_ms - self.idle_after_ms
        if idle > 0:
            self._raise(max(self.max_occurred_ms + idle, wall_now_ms - self.idle_after_ms))

    def wall_when(self, stream_ms: int) -> int | None:
        """Earliest wall time at which ``tick`` can make ``now`` reach ``stream_ms`` (None: never)."""
        if self.now is not None and self.now >= stream_ms:
            return 0
        if self.max_occurred_ms is None or self.last_arrival_wall_ms is None:
            return None
        # once idle, tick raises now to the wall clock - idle_after_ms, plus how far the
        # newest event was ahead of its arrival
        ahead = max(0, self.max_occurred_ms - self.last_arrival_wall_ms)
        return max(self.last_arrival_wall_ms + self.idle_after_ms + 1, stream_ms + self.idle_after_ms - ahead)

    def observe(self, occurred_ms: int, wall_now_ms: int) -> None:
        if self.max_occurred_ms is None or occurred_ms > self.max_occurred_ms:
            self.max_occurred_ms = occurred_ms
        if self.last_arrival_wall_ms is None or wall_now_ms > self.last_arrival_wall_ms:
            self.last_arrival_wall_ms = wall_now_ms
        self._raise(occurred_ms)

    def _raise(self, value: int) -> None:
        if self.now is None or value > self.now:
            self.now = value

    def to_plain(self) -> list[int | None]:
        return [self.now, self.max_occurred_ms, self.last_arrival_wall_ms]

    @classmethod
    def from_plain(cls, idle_after_ms: int, data: list[int | None]) -> StreamClock:
        clock = cls(idle_after_ms)
        clock.now, clock.max_occurred_ms, clock.last_arrival_wall_ms = data
        return clock
