"""The worker's step: one Kafka message in, output messages out.

This is the thin layer between the Faust agent and the pure engine: it decodes
canonical events, keeps one ``CommunityEngine`` per community (loaded from and
saved to the state table through two callables, so it runs without Faust in
tests), and turns the engine's emissions into keyed output messages. It never
talks to Kafka itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from kafka.partitioner.default import murmur2
from pydantic import ValidationError

from pipeline import topics
from pipeline.communities import Directory
from pipeline.core.engine import CommunityEngine, Emissions
from pipeline.events import CanonicalEvent
from pipeline.results import HealthSnapshot

LoadState = Callable[[str], bytes | None]
SaveState = Callable[[str, bytes], None]


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


def decode_tick(value: bytes | None) -> int:
    try:
        wall_ms = json.loads(value or b"")["wall_ms"]
    except (ValueError, KeyError, TypeError):
        raise Unprocessable('invalid tick: expected {"wall_ms": <int>}', "decode") from None
    if not isinstance(wall_ms, int):
        raise Unprocessable("invalid tick: wall_ms must be an integer", "decode")
    return wall_ms


def encode_tick(wall_ms: int) -> bytes:
    return json.dumps({"wall_ms": wall_ms}).encode()


class Processor:
    """Per-community engines for the partitions this worker owns."""

    def __init__(self, directory: Directory, load: LoadState, save: SaveState, partitions: int) -> None:
        self.directory = directory
        self._load = load
        self._save = save
        self.partitions = partitions
        self._engines: dict[str, CommunityEngine] = {}
        self._by_partition: dict[int, set[str]] = {}
        self._health: dict[str, HealthSnapshot] = {}
        self._stale: set[str] = set()  # communities whose figures changed since health was last computed
        self.newest_event_ms: int | None = None  # for the stream-lag gauge

    # -- engines --------------------------------------------------------------

    def _engine(self, community_id: str, event: CanonicalEvent | None = None) -> CommunityEngine | None:
        engine = self._engines.get(community_id)
        if engine is not None:
            return engine
        policy = self.directory.policy_for(community_id)
        data = self._load(community_id)
        if data is not None:
            engine = CommunityEngine.from_state(data, policy)
        elif event is not None:
            engine = CommunityEngine(community_id, event.platform, event.space_id, policy)
        else:
            return None
        self._engines[community_id] = engine
        self._stale.add(community_id)
        self._by_partition.setdefault(partition_for(community_id, self.partitions), set()).add(community_id)
        return engine

    def adopt(self, community_ids: Iterable[str]) -> None:
        """Make known communities (found in the state table) part of idle advancing."""
        for community_id in community_ids:
            part = partition_for(community_id, self.partitions)
            self._by_partition.setdefault(part, set()).add(community_id)

    def forget_partitions(self, partitions: Iterable[int]) -> None:
        """Drop cached engines of partitions we no longer own; the table is the truth."""
        for part in partitions:
            for community_id in self._by_partition.pop(part, set()):
                self._engines.pop(community_id, None)
                self._health.pop(community_id, None)
                self._stale.discard(community_id)

    def owned_communities(self) -> int:
        return sum(len(c) for c in self._by_partition.values())

    # -- steps ----------------------------------------------------------------

    def handle_event(self, value: bytes | None, wall_ms: int) -> StepResult:
        event = decode_event(value)
        if self.newest_event_ms is None or event.occurred_ms > self.newest_event_ms:
            self.newest_event_ms = event.occurred_ms
        engine = self._engine(event.community_id, event)
        assert engine is not None
        result = StepResult(processed=1)
        try:
            result.add(engine.apply(event, wall_ms))
        except Exception as exc:  # a bug must not stop the stream: dead-letter and go on
            self._engines.pop(event.community_id, None)  # reload clean state next time
            raise Unprocessable(
                f"engine failed on event {event.event_id}: {type(exc).__name__}: {exc}", "processing"
            ) from exc
        self._save(event.community_id, engine.to_state())
        self._stale.add(event.community_id)
        return result

    def handle_tick(self, partition: int, wall_ms: int) -> StepResult:
        result = StepResult()
        for community_id in sorted(self._by_partition.get(partition, ())):
            engine = self._engine(community_id)
            if engine is None:
                continue
            emissions = engine.advance(wall_ms)
            if emissions.windows or emissions.health or emissions.first_responses:
                result.add(emissions)
                self._save(community_id, engine.to_state())
                self._stale.add(community_id)
        return result

    def current_health(self) -> list[HealthSnapshot]:
        """Latest health of every loaded community; recomputed only where something changed."""
        for community_id in self._stale:
            engine = self._engines.get(community_id)
            if engine is not None:
                self._health[community_id] = engine.health()
        self._stale.clear()
        return list(self._health.values())
