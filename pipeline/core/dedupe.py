"""Deduplication by event_id, bounded in memory and in time.

An id is remembered as a 64-bit BLAKE2b digest (8 bytes instead of up to 256
characters), grouped by the hour of the event's ``occurred_at``. A group is
forgotten once its hour is older than stream time - max_lateness: a redelivery
of such an event is refused as too late anyway (counted as late, not applied),
so the time bound is exactly the lateness bound, which is longer than the
platforms' retry horizon (hours). ``max_entries`` caps memory for a runaway
community by forgetting the oldest hours first. A 64-bit digest collision (two
distinct ids) has a probability of about n^2 / 2^65: ~3e-10 for 100k remembered
ids in one community.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections import deque
from collections.abc import Iterable

from pipeline.core.windows import HOUR_MS


def digest(event_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(event_id.encode("utf-8"), digest_size=8).digest(), "big")


class Deduper:
    __slots__ = ("_packed", "_seen", "by_hour", "max_entries")
    # an hour with at least this many ids keeps its encoded form: a busy community is saved
    # every few seconds, and re-encoding its day of ids was a third of the save; small hours
    # are cheap to encode, and keeping theirs would cost memory in many quiet communities
    packed_from = 64

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        # a dict of ints, not a set: CPython never tracks a dict holding only ints for its cycle
        # collector, while it walks every entry of a set at each full collection (a third of a
        # full collection's time in a worker keeping 50 busy communities)
        self._seen: dict[int, None] = {}
        self.by_hour: dict[int, list[int]] = {}
        # hour -> (ids encoded, their encoding): an hour's list only grows (or goes whole),
        # so the same length means the same ids
        self._packed: dict[int, tuple[int, str]] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def seen(self, event_id: str) -> bool:
        return digest(event_id) in self._seen

    def add(self, event_id: str, occurred_ms: int) -> None:
        d = digest(event_id)
        if d in self._seen:
            return
        self._seen[d] = None
        self.by_hour.setdefault(occurred_ms - occurred_ms % HOUR_MS, []).append(d)
        if len(self._seen) > self.max_entries:
            self._drop_hours(sorted(self.by_hour)[:1])

    def prune(self, horizon_ms: int) -> None:
        """Forget ids of events that occurred before ``horizon_ms`` (by whole hours)."""
        self._drop_hours([h for h in self.by_hour if h + HOUR_MS <= horizon_ms])

    def _drop_hours(self, hours: Iterable[int]) -> None:
        for hour in hours:
            deque(map(self._seen.__delitem__, self.by_hour.pop(hour)), maxlen=0)  # at C speed
            self._packed.pop(hour, None)

    # compact form: {hour_ms_as_str: base64 of packed 8-byte digests}
    def to_plain(self) -> dict[str, str]:
        return {str(hour): self.pack(hour, ds) for hour, ds in self.by_hour.items()}

    def pack(self, hour: int, ds: list[int]) -> str:
        held = self._packed.get(hour)
        if held is not None and held[0] == len(ds):
            return held[1]
        packed = base64.b64encode(struct.pack(f">{len(ds)}Q", *ds)).decode("ascii")
        if len(ds) >= self.packed_from:
            self._packed[hour] = (len(ds), packed)
        return packed

    def restore_hour(self, hour: int, ds: list[int]) -> None:
        """Put back an hour's ids read from a state (in the order they were added)."""
        self.by_hour[hour] = ds
        self._seen.update(dict.fromkeys(ds))

    @classmethod
    def from_plain(cls, max_entries: int, data: dict[str, str]) -> Deduper:
        dedupe = cls(max_entries)
        for hour, packed in data.items():
            raw = base64.b64decode(packed)
            ds = list(struct.unpack(f">{len(raw) // 8}Q", raw))
            dedupe.by_hour[int(hour)] = ds
            dedupe._seen.update(dict.fromkeys(ds))
            if len(ds) >= dedupe.packed_from:
                dedupe._packed[int(hour)] = (len(ds), packed)
        return dedupe
