"""The sink's policies, free of I/O: when a batch is due, how long to back off, what to commit,
and how to find the rows ClickHouse refuses inside a batch.

- ``BatchPolicy``: a batch is due when it holds ``max_rows`` messages or ``max_bytes`` bytes,
  or its first message waited ``max_age_s``.
- ``Batch``: rows per table, the records they came from (for dead-lettering) and, per
  partition, the next offset to commit once everything in the batch is stored.
- ``Backoff``: exponential delays with a cap, for retries while ClickHouse is unavailable.
- ``insert_isolating``: insert a list of rows; when the store refuses the data (not when it is
  unavailable), split the list in halves until the refused rows are alone, and return them.
"""

from __future__ import annotations

import hashlib
import itertools
import operator
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, NamedTuple, Protocol, TypeVar

R = TypeVar("R")


@dataclass(frozen=True)
class BatchPolicy:
    max_rows: int = 10_000
    max_bytes: int = 32 * 1024 * 1024
    # a row's wait for its insert is part of ClickHouse freshness (target p99 < 2 s from the
    # webhook); 0.25 s means at most about four inserts per table per second. With the worker's
    # flush also at 0.25 s it took 0.4-0.6 s off the ClickHouse p99 at 300/s (bench/notes/e2e.md).
    # A ClickHouse server shared by many sinks may want longer: `pulse db sink --batch-seconds`
    max_age_s: float = 0.25

    def __post_init__(self) -> None:
        if self.max_rows < 1 or self.max_bytes < 1 or self.max_age_s <= 0:
            raise ValueError("batch limits must be positive")

    def full(self, rows: int, nbytes: int) -> bool:
        return rows >= self.max_rows or nbytes >= self.max_bytes

    def due(self, rows: int, nbytes: int, opened_at: float | None, now: float) -> bool:
        if rows == 0:
            return False
        if self.full(rows, nbytes):
            return True
        return opened_at is not None and now - opened_at >= self.max_age_s

    def room(self, rows: int) -> int:
        """How many more messages to ask the consumer for."""
        return max(0, self.max_rows - rows)

    def wait(self, rows: int, opened_at: float | None, now: float, idle_wait_s: float) -> float:
        """How long the next poll may block without making the open batch late."""
        if rows == 0 or opened_at is None:
            return idle_wait_s
        return max(0.0, min(idle_wait_s, opened_at + self.max_age_s - now))


@dataclass(frozen=True)
class Backoff:
    initial_s: float = 0.1
    factor: float = 2.0
    max_s: float = 5.0

    def delay(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (1 = first retry)."""
        if attempt < 1:
            return 0.0
        return min(self.max_s, self.initial_s * self.factor ** min(attempt - 1, 64))


class Record(Protocol):
    """Where a message came from (enough to dead-letter it and to commit past it): a ``Source``,
    or the consumer's own record, kept as it is (no copy per message on the sink's hot path)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


class Source(NamedTuple):
    """A ``Record`` built by hand."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class DeadLetter:
    source: Record
    stage: str  # "decode" or "insert"
    reason: str


@dataclass
class Batch(Generic[R]):
    rows: dict[str, list[R]] = field(default_factory=dict)
    sources: dict[str, list[Record]] = field(default_factory=dict)
    dead: list[DeadLetter] = field(default_factory=list)
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    first_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    count: int = 0
    nbytes: int = 0
    opened_at: float | None = None

    def _seen(self, source: Record, size: int, now: float) -> None:
        tp = (source.topic, source.partition)
        self.first_offsets.setdefault(tp, source.offset)
        self.next_offsets[tp] = max(self.next_offsets.get(tp, 0), source.offset + 1)
        self.count += 1
        self.nbytes += size
        if self.opened_at is None:
            self.opened_at = now

    def add_row(self, table: str, row: R, source: Record, now: float) -> None:
        self.rows.setdefault(table, []).append(row)
        self.sources.setdefault(table, []).append(source)
        self._seen(source, len(source.value or b""), now)

    def add_rows(self, table: str, rows: list[R], sources: list[Record], nbytes: int, now: float) -> None:
        """``add_row`` for many rows of one partition at once, ``sources`` in offset order."""
        if not rows:
            return
        self.rows.setdefault(table, []).extend(rows)
        self.sources.setdefault(table, []).extend(sources)
        first, last = sources[0], sources[-1]
        tp = (first.topic, first.partition)
        self.first_offsets.setdefault(tp, first.offset)
        self.next_offsets[tp] = max(self.next_offsets.get(tp, 0), last.offset + 1)
        self.count += len(rows)
        self.nbytes += nbytes
        if self.opened_at is None:
            self.opened_at = now

    def skip(self, source: Record, now: float) -> None:
        """A message with nothing to store (a tombstone): only commit past it."""
        self._seen(source, 0, now)

    def add_dead(self, letter: DeadLetter, now: float) -> None:
        self.dead.append(letter)
        self._seen(letter.source, len(letter.source.value or b""), now)

    def token(self, table: str) -> str:
        """Deterministic insert_deduplication_token: the same messages give the same token.

        Built from where the messages sit (topic, partition, offset) and what they hold, so a
        topic recreated from offset 0 can never have new rows taken for an old batch.
        """
        digest = hashlib.sha256(table.encode())
        ordered = sorted(self.sources.get(table, []), key=operator.attrgetter("topic", "partition", "offset"))
        for (topic, partition), group in itertools.groupby(ordered, operator.attrgetter("topic", "partition")):
            records = list(group)
            digest.update(f"\x1f{topic}\x1f{partition}\x1f".encode())
            digest.update(array("q", [r.offset for r in records]).tobytes())
            for r in records:  # each value with its length: no two lists of values hash alike
                value = r.value or b""
                digest.update(len(value).to_bytes(8, "little"))
                digest.update(value)
        return f"pulse-sink:{table}:{digest.hexdigest()[:40]}"


def insert_isolating(
    insert: Callable[[Sequence[R], str], None],
    rows: Sequence[R],
    token: str,
    is_row_error: Callable[[BaseException], bool],
) -> list[tuple[int, str]]:
    """Insert ``rows``; return (index, reason) of the rows the store refused.

    Only errors ``is_row_error`` accepts are split; any other error (store down, timeout)
    propagates so that the caller retries the whole batch later. Each half gets its own
    deterministic token, so a retried split is deduplicated just like a retried batch.
    """
    refused: list[tuple[int, str]] = []

    def attempt(lo: int, hi: int, tok: str) -> None:
        try:
            insert(rows[lo:hi], tok)
        except Exception as exc:
            if not is_row_error(exc):
                raise
            if hi - lo == 1:
                refused.append((lo, describe_error(exc)))
                return
            mid = (lo + hi) // 2
            attempt(lo, mid, tok + ".a")
            attempt(mid, hi, tok + ".b")

    if rows:
        attempt(0, len(rows), token)
    return refused


def describe_error(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    # ClickHouse appends a stack trace and version trailer; the first sentence says what matters
    for marker in (". (", " Stack trace"):
        cut = text.find(marker)
        if cut > 0:
            end = text.find(")", cut)
            text = text[: end + 1] if marker == ". (" and end > 0 else text[:cut]
            break
    return f"{type(exc).__name__}: {text}"[:500] if text else type(exc).__name__
