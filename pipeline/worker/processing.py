"""The worker's step: one Kafka message in, output messages and states to save out.

This is the thin layer between the Faust agent and the pure engine: it decodes
canonical events, keeps one ``CommunityEngine`` per community (loaded from the
state table through a callable, so it runs without Faust in tests), and turns the
engine's emissions into keyed output messages and the states to write back. It
never talks to Kafka itself.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from kafka.partitioner.default import murmur2
from pydantic import ValidationError

from pipeline import topics
from pipeline.communities import Directory
from pipeline.core.engine import CommunityEngine, Emissions
from pipeline.core.state import ReadRecord, Write, state_key
from pipeline.core.windows import DEFAULT_WINDOWS, WindowsConfig
from pipeline.events import CanonicalEvent
from pipeline.results import HealthSnapshot

# windows are emitted once per flush (a batch of events), not once per event: the same
# final results with far fewer intermediate versions and far less work
EMIT_ON_FLUSH = replace(DEFAULT_WINDOWS, emit_on_apply=False)

# a record of the state table by key (a community's head, state.state_key, or one of its pages)
LoadState = ReadRecord


def write_saves(table: MutableMapping[bytes, bytes], saves: Iterable[tuple[str, list[Write]]]) -> None:
    """Make a step's state writes to a table (the worker's Faust table, or a dict)."""
    for _, writes in saves:
        for key, record in writes:
            if record is None:
                table.pop(key, None)
            else:
                table[key] = record


class Unprocessable(Exception):
    """A message that goes to the dead-letter topic; ``reason`` says why."""

    def __init__(self, reason: str, category: str = "schema") -> None:
        super().__init__(reason)
        self.reason = reason
        self.category = category  # bounded metric label: decode, schema or processing


@dataclass(frozen=True)
class Output:
    topic: str  # unprefixed name from pipeline.topics
    key: bytes
    value: bytes


@dataclass
class StepResult:
    outputs: list[Output] = field(default_factory=list)
    duplicates: int = 0
    late_applied: int = 0
    late_dropped: int = 0
    processed: int = 0
    future_dropped: int = 0
    # per saved community, the state records to write to the table (in order; None deletes)
    # once the outputs are delivered: a saved state must never run ahead of its output, or
    # a crash in between would lose those rows for good
    saves: list[tuple[str, list[Write]]] = field(default_factory=list)

    def add_step(self, other: StepResult) -> None:
        self.outputs += other.outputs
        self.saves += other.saves
        self.future_dropped += other.future_dropped
        self.duplicates += other.duplicates
        self.late_applied += other.late_applied
        self.late_dropped += other.late_dropped
        self.processed += other.processed

    def add(self, emissions: Emissions) -> None:
        for w in emissions.windows:
            self.outputs.append(Output(topics.WINDOWS, w.key.encode(), w.to_json_bytes()))
        for r in emissions.first_responses:
            self.outputs.append(Output(topics.FIRST_RESPONSES, r.key.encode(), r.to_json_bytes()))
        for h in emissions.health:
            self.outputs.append(Output(topics.HEALTH, h.community_id.encode(), h.to_json_bytes()))
        self.duplicates += emissions.duplicates
        self.late_applied += emissions.late_applied
        self.late_dropped += emissions.late_dropped
        self.future_dropped += emissions.future_dropped


def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a key (murmur2, as both clients do)."""
    return (murmur2(key.encode("utf-8")) & 0x7FFFFFFF) % partitions


def decode_event(value: bytes | None) -> CanonicalEvent:
    if value is None:
        raise Unprocessable("empty message: a canonical event was expected", "decode")
    try:
        return CanonicalEvent.from_json_bytes(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "(message)"
        raise Unprocessable(f"invalid canonical event: {where}: {first.get('msg', 'invalid')}") from None
    except ValueError as exc:  # not UTF-8
        raise Unprocessable(f"invalid canonical event: {exc}", "decode") from None


class Tick(NamedTuple):
    """A message of engagement.ticks: the worker's own clock and housekeeping, per partition."""

    wall_ms: int
    advance: bool = True  # false: only flush pending work
    # set: the events of the partition before this offset may have been skipped by the
    # consumer (see tail_stalls); read from Kafka the ones not processed yet
    catch_up_to: int | None = None


def decode_tick(value: bytes | None) -> Tick:
    try:
        tick = json.loads(value or b"")
        wall_ms, advance, catch_up_to = tick["wall_ms"], tick.get("advance", True), tick.get("catch_up_to")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise Unprocessable('invalid tick: expected {"wall_ms": <int>, "advance": <bool>}', "decode") from None
    if not isinstance(wall_ms, int) or not isinstance(advance, bool):
        raise Unprocessable("invalid tick: wall_ms must be an integer and advance a boolean", "decode")
    if catch_up_to is not None and (type(catch_up_to) is not int or catch_up_to < 0):
        raise Unprocessable("invalid tick: catch_up_to must be an offset (an integer >= 0)", "decode")
    return Tick(wall_ms, advance, catch_up_to)


def encode_tick(wall_ms: int, *, advance: bool = True, catch_up_to: int | None = None) -> bytes:
    body: dict[str, int | bool] = {"wall_ms": wall_ms, "advance": advance}
    if catch_up_to is not None:
        body["catch_up_to"] = catch_up_to
    return json.dumps(body).encode()


@dataclass(frozen=True)
class PartitionProgress:
    """Where one owned partition stands: processed (None: nothing yet), fetched, and written."""

    processed: int | None
    position: int | None
    highwater: int


def tail_stalls(
    progress: dict[int, PartitionProgress],
    stalled_since: dict[int, tuple[int | None, float]],
    now: float,
    after_s: float,
) -> dict[int, int]:
    """Partitions whose last events the consumer fetched but never delivered: partition -> highwater.

    Around a rebalance the consumer now and then drops fetched events. A hole between two
    delivered events shows at the second one; a hole at the end of a partition shows as
    nothing: processing stops short of the highwater while the consumer is already at it.
    A partition counts once that has lasted ``after_s``, and then again only after another
    ``after_s``. ``stalled_since`` (partition -> (processed, since)) is kept up to date in place.
    """
    found: dict[int, int] = {}
    for partition in list(stalled_since):
        if partition not in progress:
            del stalled_since[partition]
    for partition, p in progress.items():
        behind = (p.processed or 0) < p.highwater  # nothing processed in an empty partition is not behind
        fetched_all = p.position is not None and p.position >= p.highwater
        if not (behind and fetched_all):
            stalled_since.pop(partition, None)
            continue
        seen = stalled_since.get(partition)
        if seen is None or seen[0] != p.processed:
            stalled_since[partition] = (p.processed, now)
        elif now - seen[1] >= after_s:
            found[partition] = p.highwater
            stalled_since[partition] = (p.processed, now)
    return found


# engines kept in memory; the others live only in the state table (RocksDB) and are read
# back when an event or a due health check needs them, so memory follows the active
# communities, not all of them
MAX_RESIDENT_ENGINES = 5_000
# communities of unknown due time (found in the table after a start or a rebalance)
# loaded per tick and partition: a restart with many communities is not one long stall
ADOPT_PER_TICK = 2_000


class Processor:
    """Per-community engines for the partitions this worker owns.

    Engines live in an LRU of at most ``max_engines``; one is dropped only when it owes
    nothing (no event applied or flushed since its last save, no save in the step's result that the
    caller may not have written yet). A tick advances only the communities whose engine
    says something can change by now (``next_due_wall_ms``, kept per community here), so
    the health pass costs in proportion to what can change, and silent communities still
    turn dead on time.
    """

    def __init__(
        self,
        directory: Directory,
        load: LoadState,
        partitions: int,
        max_engines: int = MAX_RESIDENT_ENGINES,
        windows: WindowsConfig = EMIT_ON_FLUSH,
    ) -> None:
        self.directory = directory
        self.windows = windows
        self._load = load
        self.partitions = partitions
        self.max_engines = max_engines
        self._engines: OrderedDict[str, CommunityEngine] = OrderedDict()
        self._by_partition: dict[int, set[str]] = {}
        self._partition_of: dict[str, int] = {}  # murmur2 in pure Python: computed once per community
        # wall ms from which a tick must advance the community (None: not before its next event);
        # absent: unknown (adopted from the table, not loaded yet)
        self._due: dict[str, int | None] = {}
        self._health: dict[str, HealthSnapshot] = {}
        self._stale: set[str] = set()  # communities whose figures changed since health was last computed
        # rises whenever current_health() may give something new: whoever shows health (the
        # worker's /metrics) asks for it again only then
        self.health_revision = 0
        self.newest_event_ms: int | None = None  # for the stream-lag gauge
        self._dirty: dict[int, set[str]] = {}  # partition -> communities applied to since the last flush
        # partition -> communities flushed (windows emitted) since their state was last saved
        self._flushed_unsaved: dict[int, set[str]] = {}
        # communities whose state is in a result the caller has not written yet: never dropped
        self._unsaved: set[str] = set()

    # -- engines --------------------------------------------------------------

    def partition_of(self, community_id: str) -> int:
        part = self._partition_of.get(community_id)
        if part is None:
            part = self._partition_of[community_id] = partition_for(community_id, self.partitions)
        return part

    @property
    def resident(self) -> int:
        """Engines in memory now."""
        return len(self._engines)

    def _engine(self, community_id: str, event: CanonicalEvent | None = None) -> CommunityEngine | None:
        engine = self._engines.get(community_id)
        if engine is not None:
            self._engines.move_to_end(community_id)
            return engine
        policy = self.directory.policy_for(community_id)
        data = self._load(state_key(community_id))
        if data is not None:
            engine = CommunityEngine.from_state(data, policy, self._load)
            engine.config = self.windows  # state holds no rules: set them again
        elif event is not None:
            engine = CommunityEngine(community_id, event.platform, event.space_id, policy, self.windows)
        else:
            return None
        self._evict(self.max_engines - 1)
        self._engines[community_id] = engine
        self._mark_stale(community_id)
        self._by_partition.setdefault(self.partition_of(community_id), set()).add(community_id)
        return engine

    def _evict(self, keep: int) -> None:
        """Drop the least recently used engines that owe nothing until ``keep`` remain."""
        excess = len(self._engines) - keep
        if excess <= 0:
            return
        drop: list[str] = []
        for community_id in self._engines:
            if len(drop) >= excess:
                break
            part = self.partition_of(community_id)
            if (
                community_id in self._unsaved
                or community_id in self._dirty.get(part, ())
                or community_id in self._flushed_unsaved.get(part, ())
            ):
                continue
            drop.append(community_id)
        for community_id in drop:
            engine = self._engines.pop(community_id)
            if community_id in self._stale:  # its last health stays exported
                self._health[community_id] = engine.health()
                self._stale.discard(community_id)

    def adopt(self, community_ids: Iterable[str]) -> None:
        """Make known communities (found in the state table) part of idle advancing."""
        for community_id in community_ids:
            self._by_partition.setdefault(self.partition_of(community_id), set()).add(community_id)

    def _mark_stale(self, community_id: str) -> None:
        self._stale.add(community_id)
        self.health_revision += 1

    def forget_partitions(self, partitions: Iterable[int]) -> None:
        """Drop cached engines of partitions we no longer own; the table is the truth."""
        self.health_revision += 1
        for part in partitions:
            self._dirty.pop(part, None)  # unacknowledged: the next owner applies those events again
            self._flushed_unsaved.pop(part, None)
            for community_id in self._by_partition.pop(part, set()):
                self._engines.pop(community_id, None)
                self._health.pop(community_id, None)
                self._due.pop(community_id, None)
                self._stale.discard(community_id)
                self._unsaved.discard(community_id)

    def saves_lost(self, community_ids: Iterable[str]) -> None:
        """The caller could not write these communities' saves (a step failed before it did).

        A save writes only what changed since the last one, so the next save of each must
        write everything again (``Pages.lost``); they owe one from now on, and their engines,
        which hold the step's events, stay in memory until then. (Dropping them instead would
        let later saves move the stored stream time past the step's events, which, coming
        again after a restart, would then be refused as late.)
        """
        for community_id in community_ids:
            engine = self._engines.get(community_id)
            if engine is None:  # never: an engine whose save is not written yet is not dropped
                continue
            engine.pages.lost()
            self._flushed_unsaved.setdefault(self.partition_of(community_id), set()).add(community_id)
            self._unsaved.discard(community_id)

    # -- steps ----------------------------------------------------------------

    def handle_event(self, value: bytes | None, wall_ms: int) -> StepResult:
        """Apply one event; its windows are emitted at the next flush, its state saved at the next saving one."""
        self._unsaved.clear()  # the caller wrote the last step's saves before this step
        self._evict(self.max_engines)  # engines flushed since the last step may go now
        event = decode_event(value)
        if self.newest_event_ms is None or event.occurred_ms > self.newest_event_ms:
            self.newest_event_ms = event.occurred_ms
        engine = self._engine(event.community_id, event)
        assert engine is not None
        result = StepResult(processed=1)
        try:
            result.add(engine.apply(event, wall_ms))
        except Exception as exc:  # a bug must not stop the stream: dead-letter and go on
            raise Unprocessable(
                f"engine failed on event {event.event_id}: {type(exc).__name__}: {exc}", "processing"
            ) from exc
        self._dirty.setdefault(self.partition_of(event.community_id), set()).add(event.community_id)
        return result

    def flush(self, partition: int, wall_ms: int, *, save: bool = True) -> StepResult:
        """Emit the changed windows of a partition's communities; with ``save``, save their state.

        ``save`` covers every community flushed since its last save. Called in the context
        of a message of that same partition (the state table's changelog partition is the
        current message's), and before the events applied since the last save are
        acknowledged, so a committed offset never runs ahead of the saved state. A flush
        without saving shows the events (windows, health) sooner; their state is written,
        and they are acknowledged, at a later saving flush of the partition.
        """
        result = StepResult()
        flushed = self._flushed_unsaved.setdefault(partition, set())
        for community_id in sorted(self._dirty.pop(partition, ())):
            engine = self._engines.get(community_id)
            if engine is None:
                continue
            result.add(engine.advance(wall_ms))
            flushed.add(community_id)
            self._due[community_id] = engine.next_due_wall_ms()
            self._mark_stale(community_id)
        if save:
            del self._flushed_unsaved[partition]
            for community_id in sorted(flushed):
                engine = self._engines.get(community_id)
                if engine is None:  # never: an engine owing a save is not dropped
                    continue
                result.saves.append((community_id, engine.state_writes()))
                self._unsaved.add(community_id)
        return result

    def handle_tick(self, partition: int, wall_ms: int, *, save: bool = True) -> StepResult:
        """Advance the partition's communities with the wall clock where something can change.

        Idle ones too: their engine said when a window closes or a health view moves
        (``next_due_wall_ms``), so a silent community turns dead on the first tick after
        that, without its engine staying in memory until then. ``save`` as for ``flush``:
        without it, what the tick changed is saved at the partition's next saving flush.
        """
        self._unsaved.clear()
        self._evict(self.max_engines)
        result = self.flush(partition, wall_ms, save=save)
        due_now: list[str] = []
        unknown: list[str] = []
        for community_id in self._by_partition.get(partition, ()):
            if community_id not in self._due:
                unknown.append(community_id)
                continue
            due = self._due[community_id]
            if due is not None and due <= wall_ms:
                due_now.append(community_id)
        due_now += sorted(unknown)[:ADOPT_PER_TICK]
        for community_id in sorted(due_now):
            engine = self._engine(community_id)
            if engine is None:
                self._due[community_id] = None
                continue
            emissions = engine.advance(wall_ms)
            self._due[community_id] = engine.next_due_wall_ms()
            if emissions.windows or emissions.health or emissions.first_responses:
                result.add(emissions)
                if save:
                    result.saves.append((community_id, engine.state_writes()))
                    self._unsaved.add(community_id)
                else:
                    self._flushed_unsaved.setdefault(partition, set()).add(community_id)
                self._mark_stale(community_id)
        return result

    def owes_save(self, partition: int) -> bool:
        """Whether communities of the partition changed since their state was last saved."""
        return bool(self._flushed_unsaved.get(partition) or self._dirty.get(partition))

    def current_health(self) -> list[HealthSnapshot]:
        """Latest health of every known community; recomputed only where something changed."""
        for community_id in self._stale:
            engine = self._engines.get(community_id)
            if engine is not None:
                self._health[community_id] = engine.health()
        self._stale.clear()
        return list(self._health.values())
