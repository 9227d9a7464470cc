"""The sink on the real broker and the real embedded engine.

Unavailability is real, not simulated in Python: the engine's table is DETACHed (ClickHouse then
refuses every insert with UNKNOWN_TABLE, as during maintenance or a lost disk) and ATTACHed again;
and the sink's client handle is closed under it (a lost connection), which it must reopen.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry
from pydantic import BaseModel
from storage_samples import event, first_response, health, window

from pipeline import topics
from pipeline.config import Settings
from pipeline.metrics import WorkerMetrics
from pipeline.storage.batching import Backoff, BatchPolicy
from pipeline.storage.client import close_quietly, connect
from pipeline.storage.migrate import migrate
from pipeline.storage.queries import community_detail, list_communities
from pipeline.storage.sink import SINK_GROUP, Sink

pytestmark = pytest.mark.kafka

TOPIC_OF = {
    "CanonicalEvent": topics.EVENTS,
    "WindowResult": topics.WINDOWS,
    "FirstResponse": topics.FIRST_RESPONSES,
    "HealthSnapshot": topics.HEALTH,
}


def produce(settings: Settings, items: Sequence[BaseModel | tuple[str, bytes | None]]) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    try:
        for item in items:
            if isinstance(item, tuple):
                topic, value = item
            else:
                topic, value = TOPIC_OF[type(item).__name__], item.to_json_bytes()  # type: ignore[attr-defined]
            key = getattr(item, "community_id", "x")
            producer.send(settings.topic(topic), key=str(key).encode(), value=value)
        producer.flush(30)
    finally:
        producer.close(5)


def drive(sink: Sink, until: Callable[[], bool], timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not until():
        assert time.monotonic() < deadline, f"condition not reached; stats={sink.stats}"
        sink.run_once(0.2)


def count(client: Any, table: str) -> int:
    return int(client.command(f"SELECT count() FROM {table} FINAL"))


def committed(settings: Settings, group: str) -> int:
    """Sum of the group's committed offsets over the sink's topics (= messages it is done with)."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=group, enable_auto_commit=False)
    try:
        total = 0
        for name in (topics.EVENTS, topics.WINDOWS, topics.FIRST_RESPONSES, topics.HEALTH):
            topic = settings.topic(name)
            for partition in consumer.partitions_for_topic(topic) or ():
                total += consumer.committed(TopicPartition(topic, partition)) or 0
        return total
    finally:
        consumer.close()


def dead_letters(settings: Settings, expected: int) -> list[Any]:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    tp = TopicPartition(settings.topic(topics.DEAD_LETTER), 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    found: list[Any] = []
    deadline = time.monotonic() + 30
    try:
        while len(found) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                found.extend(records)
    finally:
        consumer.close()
    return found


@pytest.fixture
def make_sink(sink_settings: Settings) -> Iterator[Callable[..., Sink]]:
    sinks: list[Sink] = []

    def make(**kwargs: Any) -> Sink:
        kwargs.setdefault("policy", BatchPolicy(max_rows=500, max_age_s=0.2))
        kwargs.setdefault("backoff", Backoff(initial_s=0.05, max_s=0.4))
        client = connect(sink_settings)
        sink = Sink(sink_settings, client, **kwargs)
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.close()
        close_quietly(sink.client)


@pytest.fixture
def db(sink_settings: Settings) -> Iterator[Any]:
    client = connect(sink_settings)
    migrate(client)
    yield client
    client.command(f"DROP DATABASE IF EXISTS `{client.database}`")
    close_quietly(client)


def sample(n_events: int = 30) -> list[BaseModel]:
    items: list[BaseModel] = [event("a", i) for i in range(n_events)]
    items += [window("a", 0, v) for v in (1, 2, 3)] + [window("a", 1, 1), window("b", 0, 1)]
    items += [first_response("a", "t1"), first_response("a", "t2", 120.0)]
    items += [health("a", "healthy", 0), health("a", "dying", 20, previous="healthy"), health("b", "dead", 5)]
    return items


def test_rows_produced_to_the_topics_land_in_clickhouse(db: Any, sink_settings: Settings, make_sink: Any) -> None:
    items = sample()
    produce(sink_settings, items)
    registry = CollectorRegistry()
    WorkerMetrics(registry)  # the worker registers the sink's metrics; the sink must use them
    sink = make_sink(registry=registry)
    drive(sink, lambda: sink.stats.total_rows >= len(items))
    assert sink.stats.total_rows == len(items)
    assert registry.get_sample_value("pulse_sink_rows_total", {"table": "events"}) == 30
    assert registry.get_sample_value("pulse_sink_rows_total", {"table": "windows"}) == 5
    assert (registry.get_sample_value("pulse_sink_batches_total", {"table": "health"}) or 0) >= 1
    assert count(db, "events") == 30
    assert count(db, "window_results") == 3  # (a,0) folded to its highest version
    assert count(db, "first_responses") == 2
    assert count(db, "health_snapshots") == 3
    assert [(r["community_id"], r["state"]) for r in list_communities(db)] == [("b", "dead"), ("a", "dying")]
    detail = community_detail(db, "a")
    assert detail is not None and [w["version"] for w in detail["hourly"]] == [3, 1]
    assert [c["to_state"] for c in detail["state_changes"]] == ["dying"]
    assert committed(sink_settings, sink_settings.topic_prefix + SINK_GROUP) == len(items)


def test_replaying_the_same_messages_twice_leaves_results_unchanged(
    db: Any, sink_settings: Settings, make_sink: Any
) -> None:
    items = sample()
    produce(sink_settings, items)
    sink = make_sink()
    drive(sink, lambda: sink.stats.total_rows >= len(items))

    def answers() -> Any:
        tables = ("events", "window_results", "first_responses", "health_snapshots", "state_changes")
        return (
            list_communities(db),
            community_detail(db, "a"),
            community_detail(db, "b"),
            {t: count(db, t) for t in tables},
        )

    before = answers()
    # the same messages produced again, and the whole topic read again by a fresh consumer group
    produce(sink_settings, items)
    drive(sink, lambda: sink.stats.total_rows >= 2 * len(items))
    replay = make_sink(group_id=f"replay-{uuid.uuid4().hex[:6]}")
    drive(replay, lambda: replay.stats.total_rows >= 2 * len(items))
    assert answers() == before


def test_poison_rows_go_to_the_dead_letter_topic_and_the_rest_is_stored(
    db: Any, sink_settings: Settings, make_sink: Any
) -> None:
    good = [window("a", h, 1) for h in range(6)]
    backwards = window("a", 7, 1, window_end=window("a", 6, 1).window_start)  # passes the model
    produce(
        sink_settings,
        [
            *good[:3],
            (topics.WINDOWS, b"{not json"),
            backwards,
            (topics.WINDOWS, None),  # a tombstone of the compacted topic: skipped, not dead
            *good[3:],
            (topics.HEALTH, b'{"state": "x"}'),
        ],
    )
    sink = make_sink()
    drive(sink, lambda: committed(sink_settings, sink_settings.topic_prefix + SINK_GROUP) == 10)
    assert sink.stats.dead_letters == 3
    assert count(db, "window_results") == 6
    letters = dead_letters(sink_settings, 3)
    by_stage: dict[str, list[Any]] = {}
    for letter in letters:
        headers = {k: v.decode() for k, v in letter.headers}
        by_stage.setdefault(headers["stage"], []).append((letter.value, headers))
    assert sorted(v for v, _ in by_stage["decode"]) == [b'{"state": "x"}', b"{not json"]
    [(value, headers)] = by_stage["insert"]
    assert json.loads(value)["window_start"] == json.loads(backwards.to_json_bytes())["window_start"]
    assert "VIOLATED_CONSTRAINT" in headers["reason"] and "window_ordered" in headers["reason"]
    assert headers["source_topic"] == sink_settings.topic(topics.WINDOWS)
    decode_reasons = sorted(h["reason"] for _, h in by_stage["decode"])
    assert any("Invalid JSON" in r for r in decode_reasons)
    assert any(r.startswith("health_snapshots: ") and "Field required" in r for r in decode_reasons)
    # everything, dead letters and the tombstone included, was committed


def test_the_sink_holds_back_while_clickhouse_refuses_and_catches_up_without_loss(
    db: Any, sink_settings: Settings, make_sink: Any
) -> None:
    sink = make_sink()
    produce(sink_settings, [window("a", h, 1) for h in range(10)])
    drive(sink, lambda: count(db, "window_results") == 10)

    db.command("DETACH TABLE window_results")
    try:
        produce(sink_settings, [window("a", h, 2) for h in range(10, 40)])
        drive(sink, lambda: sink.held and sink.stats.failures >= 3)
        assert sink._consumer.paused(), "consumption must be paused while the batch is held"
        held_before = sink.pending
        produce(sink_settings, [window("a", h, 1) for h in range(40, 60)])
        for _ in range(10):
            sink.run_once(0.1)
        assert sink.held and sink.pending == held_before  # nothing more consumed, nothing dropped
        assert committed(sink_settings, sink_settings.topic_prefix + SINK_GROUP) == 10
    finally:
        db.command("ATTACH TABLE window_results")

    drive(sink, lambda: count(db, "window_results") == 60)
    assert not sink.held and not sink._consumer.paused()
    assert db.command("SELECT count() FROM window_results FINAL WHERE version = 2") == 30
    assert sink.stats.dead_letters == 0
    assert committed(sink_settings, sink_settings.topic_prefix + SINK_GROUP) == 60


def test_a_lost_connection_is_reopened_and_nothing_is_lost(
    db: Any, sink_settings: Settings, make_sink: Any
) -> None:
    sink = make_sink()
    produce(sink_settings, [health("a", "healthy", m) for m in range(5)])
    drive(sink, lambda: count(db, "health_snapshots") == 5)
    sink.client.close()  # the handle is gone, as after a network failure
    produce(sink_settings, [health("a", "healthy", m) for m in range(5, 25)])
    drive(sink, lambda: count(db, "health_snapshots") == 25)
    assert sink.stats.reconnects == 1 and sink.stats.failures >= 1
    assert "closed" in (sink.stats.last_error or "")


def test_a_second_sink_joining_the_group_takes_partitions_and_nothing_is_lost_or_doubled(
    db: Any, sink_settings: Settings, make_sink: Any
) -> None:
    """Rebalances happen on the consumer's own thread, at any moment: a batch of revoked
    partitions is dropped and read again by the new owner, never stored twice in query results."""
    first = [window(f"c{i % 7}", i, 1) for i in range(120)]
    produce(sink_settings, first)
    a = make_sink()
    drive(a, lambda: a.stats.total_rows > 0)
    b = make_sink()  # same group: the partitions are shared out again while a holds a batch
    later = [window(f"c{i % 7}", i, 2) for i in range(60, 180)]
    produce(sink_settings, later)
    group = sink_settings.topic_prefix + SINK_GROUP
    deadline = time.monotonic() + 120
    while committed(sink_settings, group) < len(first) + len(later):
        assert time.monotonic() < deadline, f"not all committed: a={a.stats} b={b.stats}"
        a.run_once(0.1)
        b.run_once(0.1)
    assert count(db, "window_results") == 180  # one row per (community, hour): version 2 wins
    assert db.command("SELECT count() FROM window_results FINAL WHERE version = 2") == 120
    assert a.stats.dead_letters == b.stats.dead_letters == 0
    assert a._consumer.revoked >= 1 and b.stats.total_rows > 0  # the rebalance did happen
