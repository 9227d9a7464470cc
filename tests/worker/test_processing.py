"""The worker's step without Kafka: batching and flushing never change the final results."""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import topics
from pipeline.communities import load_directory
from pipeline.core.engine import CommunityEngine
from pipeline.core.state import state_key
from pipeline.events import CanonicalEvent
from pipeline.worker.processing import (
    PartitionProgress,
    Processor,
    StepResult,
    Tick,
    Unprocessable,
    decode_tick,
    encode_tick,
    partition_for,
    tail_stalls,
    write_saves,
)
from tests.core.test_state_pages import page_sizes
from tests.worker.test_worker_kafka import _final_rows, _history, _reference

WALL_MS = 1_800_000_000_000


@pytest.fixture(scope="module")
def history() -> list[CanonicalEvent]:
    # one small real community (plus its sentinel) keeps these pure runs quick
    return [e for e in _history() if e.community_id == "052012-literature"]


@pytest.fixture(scope="module")
def expected(history: list[CanonicalEvent]) -> dict[Any, Any]:
    return _reference(history)


def _run(
    events: list[CanonicalEvent],
    flush_after: list[int],
    restart_at: int | None = None,
    max_engines: int = 5_000,
    save_every: int = 1,
) -> dict[Any, Any]:
    """Feed events through Processors over a dict 'table', flushing each partition after the
    given counts of events and saving at every ``save_every``-th flush of the partition;
    optionally lose the process (unsaved work) and restart.
    ``max_engines``: engines kept in memory (the others are read back from the table)."""
    table: dict[bytes, bytes] = {}
    processor = Processor(load_directory(None), table.get, topics.EVENT_PARTITIONS, max_engines)
    rows: list[dict[str, Any]] = []
    since_flush: dict[int, int] = {}
    flushes: dict[int, int] = {}
    unacked: dict[int, list[CanonicalEvent]] = {}
    i = 0
    queue = list(events)
    while i < len(queue):
        event = queue[i]
        part = partition_for(event.community_id, topics.EVENT_PARTITIONS)
        result = processor.handle_event(event.to_json_bytes(), WALL_MS)
        rows += [json.loads(o.value) for o in result.outputs if o.topic == topics.WINDOWS]
        unacked.setdefault(part, []).append(event)
        since_flush[part] = since_flush.get(part, 0) + 1
        if since_flush[part] >= flush_after[i % len(flush_after)]:
            flushes[part] = flushes.get(part, 0) + 1
            save = flushes[part] % save_every == 0
            rows += _flushed(processor.flush(part, WALL_MS, save=save), table)
            since_flush[part] = 0
            if save:
                unacked[part] = []
        if restart_at is not None and i == restart_at:
            # crash: what was not flushed is lost and redelivered (never acknowledged)
            redeliver = [e for evs in unacked.values() for e in evs]
            processor = Processor(load_directory(None), table.get, topics.EVENT_PARTITIONS, max_engines)
            unacked, since_flush, flushes = {}, {}, {}
            queue = queue[: i + 1] + sorted(redeliver, key=queue.index) + queue[i + 1 :]
            restart_at = None
        i += 1
    for part in range(topics.EVENT_PARTITIONS):
        rows += _flushed(processor.flush(part, WALL_MS), table)
    return _final_rows(rows)


def _flushed(result: StepResult, table: dict[bytes, bytes]) -> list[dict[str, Any]]:
    """What the agent does with a flush: outputs first, then the states."""
    rows = [json.loads(o.value) for o in result.outputs if o.topic == topics.WINDOWS]
    write_saves(table, result.saves)
    return rows


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    flush_after=st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=3),
    save_every=st.integers(min_value=1, max_value=5),
)
def test_flush_and_save_points_do_not_change_final_windows(
    flush_after: list[int], save_every: int, history: list[CanonicalEvent], expected: dict[Any, Any]
) -> None:
    assert _run(history, flush_after, save_every=save_every) == expected


def test_losing_unsaved_work_and_redelivering_it_gives_the_same_final_windows(
    history: list[CanonicalEvent], expected: dict[Any, Any]
) -> None:
    # events flushed (their windows already sent) but not saved are applied again after the
    # crash: the rows they give again are the same or newer versions, never a loss
    rng = random.Random(5)
    for save_every in (1, 1, 3, 4):
        restart_at = rng.randrange(len(history) // 2)
        assert _run(history, [rng.randint(20, 400)], restart_at=restart_at, save_every=save_every) == expected


def test_a_flush_that_does_not_save_emits_windows_and_saves_nothing(history: list[CanonicalEvent]) -> None:
    table: dict[bytes, bytes] = {}
    processor = Processor(load_directory(None), table.get, topics.EVENT_PARTITIONS)
    first = history[:50]
    for event in first:
        processor.handle_event(event.to_json_bytes(), WALL_MS)
    parts = {partition_for(e.community_id, topics.EVENT_PARTITIONS) for e in first}
    shown = [processor.flush(part, WALL_MS, save=False) for part in sorted(parts)]
    assert any(r.outputs for r in shown) and not any(r.saves for r in shown)
    saved = [processor.flush(part, WALL_MS) for part in sorted(parts)]
    # the next saving flush saves every community flushed since, though nothing changed since
    assert {c for r in saved for c, _ in r.saves} == {e.community_id for e in first}
    assert not any(r.outputs for r in saved)


PAIR = ("052012-literature", "052012economics")


def _pair() -> tuple[list[CanonicalEvent], dict[Any, Any]]:
    """The events of two Stack Exchange communities, and the final windows they give."""
    events = [e for e in _history() if e.community_id in PAIR]
    return events, _reference(events)


def test_engines_dropped_from_memory_and_read_back_give_the_same_final_windows() -> None:
    # two communities, one engine in memory: each event of one may drop the other (never a
    # dirty one, applied and not flushed, nor one whose save the caller has not written)
    events, expected = _pair()
    rng = random.Random(11)
    assert _run(events, [rng.randint(1, 300) for _ in range(3)], max_engines=1) == expected
    assert _run(events, [rng.randint(20, 300)], restart_at=len(events) // 3, max_engines=1) == expected
    # a community flushed but not saved yet is never dropped: its next save would be lost
    assert _run(events, [rng.randint(1, 60) for _ in range(3)], max_engines=1, save_every=4) == expected
    assert _run(events, [rng.randint(5, 60)], restart_at=len(events) // 2, max_engines=1, save_every=3) == expected


def test_engines_read_back_from_paged_states_give_the_same_final_windows() -> None:
    # pages of 3 threads and 4 event ids: every community's state is mostly pages, rewritten,
    # emptied and deleted as it goes; engines are dropped and read back, and a crash loses
    # what was not saved
    events, expected = _pair()
    rng = random.Random(13)
    with page_sizes(threads=3, ids=4):
        assert _run(events, [rng.randint(1, 60) for _ in range(3)], max_engines=1, save_every=2) == expected
        assert _run(events, [rng.randint(5, 60)], restart_at=len(events) // 2, max_engines=1, save_every=3) == expected


def test_after_a_save_the_caller_could_not_write_the_next_one_writes_the_state_whole() -> None:
    # a save computed but not written (the step failed while its outputs were delivered): the
    # engines keep the step's events and their next save writes every page again; after a
    # restart the events from the last written save on (never acknowledged) come again
    events, expected = _pair()
    failed_at = len(events) // 3
    with page_sizes(threads=3, ids=4):
        table: dict[bytes, bytes] = {}
        processor = Processor(load_directory(None), table.get, topics.EVENT_PARTITIONS)
        rows: list[dict[str, Any]] = []
        last_written = -1
        for i, event in enumerate(events):
            processor.handle_event(event.to_json_bytes(), WALL_MS)
            if i % 25 == 24 or i == failed_at:
                for part in range(topics.EVENT_PARTITIONS):
                    result = processor.flush(part, WALL_MS)
                    rows += [json.loads(o.value) for o in result.outputs if o.topic == topics.WINDOWS]
                    if i == failed_at:
                        processor.saves_lost(c for c, _ in result.saves)
                        assert processor.owes_save(part) == bool(result.saves)  # saved again even if quiet
                        continue
                    write_saves(table, result.saves)
                    # the table holds exactly what the engines hold, the lost save's changes too
                    for community, _ in result.saves:
                        stored = CommunityEngine.from_state(table[state_key(community)], read=table.get)
                        engine = processor._engines[community]  # (resident: it was just saved)
                        assert orjson.loads(stored.to_state()) == orjson.loads(engine.to_state())
                if i < failed_at:
                    last_written = i
        for part in range(topics.EVENT_PARTITIONS):
            rows += _flushed(processor.flush(part, WALL_MS), table)
        restarted = Processor(load_directory(None), table.get, topics.EVENT_PARTITIONS)
        for event in events[last_written + 1 :]:
            restarted.handle_event(event.to_json_bytes(), WALL_MS)
        for part in range(topics.EVENT_PARTITIONS):
            rows += _flushed(restarted.flush(part, WALL_MS), table)
    assert _final_rows(rows) == expected


def test_ticks_round_trip_and_bad_ticks_are_unprocessable() -> None:
    assert decode_tick(encode_tick(123)) == Tick(123, True, None)
    assert decode_tick(encode_tick(5, advance=False)) == Tick(5, False, None)
    assert decode_tick(encode_tick(5, advance=False, catch_up_to=0)) == Tick(5, False, 0)
    assert decode_tick(b'{"wall_ms": 7}') == Tick(7, True, None)
    bad_ticks = (
        None,
        b"",
        b"[]",
        b'{"wall_ms": "x"}',
        b'{"wall_ms": 1, "advance": 3}',
        b'{"wall_ms": 1, "catch_up_to": -1}',
        b'{"wall_ms": 1, "catch_up_to": true}',
        b'{"wall_ms": 1, "catch_up_to": 2.5}',
    )
    for bad in bad_ticks:
        with pytest.raises(Unprocessable):
            decode_tick(bad)


def test_a_partition_fetched_to_its_end_but_processed_short_of_it_is_a_tail_stall() -> None:
    stalled: dict[int, tuple[int | None, float]] = {}
    progress = {
        0: PartitionProgress(processed=40, position=50, highwater=50),  # dropped tail
        1: PartitionProgress(processed=None, position=9, highwater=9),  # nothing processed at all
        2: PartitionProgress(processed=10, position=30, highwater=50),  # still fetching: a backlog
        3: PartitionProgress(processed=50, position=50, highwater=50),  # caught up
        4: PartitionProgress(processed=None, position=0, highwater=0),  # empty
    }
    assert tail_stalls(progress, stalled, now=100.0, after_s=10) == {}
    assert set(stalled) == {0, 1}
    assert tail_stalls(progress, stalled, now=109.0, after_s=10) == {}
    assert tail_stalls(progress, stalled, now=110.0, after_s=10) == {0: 50, 1: 9}
    # counted again only after another period
    assert tail_stalls(progress, stalled, now=115.0, after_s=10) == {}
    assert tail_stalls(progress, stalled, now=120.0, after_s=10) == {0: 50, 1: 9}
    # progress restarts the clock; catching up or losing the partition forgets it
    moved = {0: PartitionProgress(processed=45, position=50, highwater=50), 3: progress[3], 4: progress[4]}
    assert tail_stalls(moved, stalled, now=125.0, after_s=10) == {}
    assert stalled == {0: (45, 125.0)}
    assert tail_stalls(moved, stalled, now=134.0, after_s=10) == {}
    assert tail_stalls({0: PartitionProgress(50, 50, 50)}, stalled, now=200.0, after_s=10) == {}
    assert stalled == {}


@given(
    st.dictionaries(
        st.integers(0, 7),
        st.tuples(st.none() | st.integers(0, 100), st.none() | st.integers(0, 100), st.integers(0, 100)),
        max_size=8,
    ),
    st.lists(st.floats(0, 30), min_size=1, max_size=6),
)
def test_tail_stalls_name_only_partitions_behind_with_everything_fetched(
    raw: dict[int, tuple[int | None, int | None, int]], steps: list[float]
) -> None:
    progress = {p: PartitionProgress(*v) for p, v in raw.items()}
    stalled: dict[int, tuple[int | None, float]] = {}
    now = 0.0
    for step in steps:
        now += step
        found = tail_stalls(progress, stalled, now, after_s=10)
        for partition, highwater in found.items():
            p = progress[partition]
            assert highwater == p.highwater
            assert (p.processed or 0) < p.highwater
            assert p.position is not None and p.position >= p.highwater
        assert set(stalled) <= set(progress)


def test_bad_events_are_unprocessable_with_a_reason() -> None:
    processor = Processor(load_directory(None), {}.get, topics.EVENT_PARTITIONS)
    with pytest.raises(Unprocessable, match="invalid canonical event: occurred_at"):
        processor.handle_event(
            b'{"event_id":"e","platform":"x","space_id":"s","community_id":"c",'
            b'"kind":"reply","actor_id":"a","occurred_at":"yesterday"}',
            WALL_MS,
        )
    with pytest.raises(Unprocessable, match="empty message"):
        processor.handle_event(None, WALL_MS)


@given(st.text(min_size=1, max_size=40))
def test_partition_matches_the_partitioner_faust_uses(key: str) -> None:
    # the gateway produces with kafka-python, Faust consumes with aiokafka: both must agree
    from aiokafka.partitioner import DefaultPartitioner

    parts = list(range(topics.EVENT_PARTITIONS))
    assert partition_for(key, len(parts)) == DefaultPartitioner()(key.encode(), parts, parts)


def test_health_revision_rises_exactly_when_current_health_may_differ(history: list[CanonicalEvent]) -> None:
    table: dict[bytes, bytes] = {}
    processor = Processor(load_directory(None), table.get, topics.EVENT_PARTITIONS)
    part = partition_for(history[0].community_id, topics.EVENT_PARTITIONS)
    start = processor.health_revision
    processor.handle_event(history[0].to_json_bytes(), WALL_MS)
    # the engine is new: its health is not shown yet
    assert processor.health_revision > start
    shown = processor.current_health()
    assert [h.community_id for h in shown] == [history[0].community_id]
    quiet = processor.health_revision
    assert processor.current_health() == shown and processor.health_revision == quiet
    processor.handle_event(history[1].to_json_bytes(), WALL_MS)
    write_saves(table, processor.flush(part, WALL_MS).saves)
    assert processor.health_revision > quiet
    after = processor.current_health()
    assert after[0].posts_24h == shown[0].posts_24h + 1
    gone = processor.health_revision
    processor.forget_partitions([part])
    assert processor.health_revision > gone and processor.current_health() == []


def test_a_tick_that_does_not_save_leaves_its_changes_owed_to_the_next_saving_flush(
    history: list[CanonicalEvent],
) -> None:
    table: dict[bytes, bytes] = {}
    # no engine may stay resident unless it owes something
    processor = Processor(load_directory(None), table.get, topics.EVENT_PARTITIONS, max_engines=0)
    community = history[0].community_id
    part = partition_for(community, topics.EVENT_PARTITIONS)
    for event in history[:30]:
        processor.handle_event(event.to_json_bytes(), WALL_MS)
    write_saves(table, processor.flush(part, WALL_MS).saves)
    assert not processor.owes_save(part)
    saved = table[state_key(community)]
    later = WALL_MS + 20 * 86_400_000  # silent for 20 days: the wall clock closes windows, health turns dead
    ticked = processor.handle_tick(part, later, save=False)
    assert ticked.outputs and not ticked.saves
    assert processor.owes_save(part)
    assert processor.resident == 1  # owing a save, the engine stays in memory
    flushed = processor.flush(part, later + 1000)
    assert [c for c, _ in flushed.saves] == [community] and flushed.saves[0][1][-1] != (state_key(community), saved)
    write_saves(table, flushed.saves)
    assert not processor.owes_save(part)
    # what was saved is what the tick made: a reload shows the same health
    shown = processor.current_health()
    reloaded = Processor(load_directory(None), table.get, topics.EVENT_PARTITIONS)
    reloaded.adopt([community])
    assert reloaded.handle_tick(part, later + 1000).saves == []  # nothing due again
    assert [h.state for h in reloaded.current_health()] == [h.state for h in shown] == ["dead"]
