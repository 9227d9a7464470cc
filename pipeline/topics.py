"""Kafka topics of the pipeline: names, partition counts and configs in one place.

`pulse stack up` creates them idempotently; the gateway and worker only use them.
Every name gets ``PULSE_TOPIC_PREFIX`` in front, so tests can run isolated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)
    purpose: str = ""


# engagement.events is keyed by community_id; the worker's state is partitioned the
# same way, so its partition count caps how many workers share the load.
EVENT_PARTITIONS = 4
# how long the broker may hold a consumer's fetch when it has nothing new. A client has one
# fetch in flight per broker, and partitions with records still buffered are left out of it:
# while a long fetch waits on the quiet ones (ticks), the busy ones wait behind it. Faust
# holds it 1.5 s (aiokafka's default is 0.5 s); at 1,000 events/s that starved the worker.
CONSUMER_FETCH_WAIT_MS = 100
MAX_BODY_BYTES = 8 * 1024 * 1024  # largest PULSE_MAX_BODY_BYTES the raw topic can hold
RAW_MAX_BYTES = MAX_BODY_BYTES + 256 * 1024
# largest state record the worker can write: a community's head record (pipeline.core.state)
# holds all of a quiet community's state, and a busy one's members, buckets and settled threads.
# Before pages, one record held the whole state, and Kafka's default (1 MB) was outgrown by a
# busy channel within minutes. Set on the changelog topic when the worker creates it and on the
# worker's producer; a changelog created before needs it too (docs/scaling.md)
STATE_MAX_BYTES = 32 * 1024 * 1024
STATE_RECORD_MAX_BYTES = STATE_MAX_BYTES + 64 * 1024  # key, headers and batch overhead

RAW = "webhooks.raw"
EVENTS = "engagement.events"
WINDOWS = "engagement.windows"
FIRST_RESPONSES = "engagement.first_responses"
HEALTH = "engagement.health"
DEAD_LETTER = "engagement.deadletter"
TICKS = "engagement.ticks"

TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(
        RAW,
        EVENT_PARTITIONS,
        # a record holds a whole body (PULSE_MAX_BODY_BYTES, at most 8 MiB) plus headers: above
        # the broker's 1 MB default, so the topic allows more
        {"retention.ms": str(14 * DAY_MS), "compression.type": "producer", "max.message.bytes": str(RAW_MAX_BYTES)},
        "every accepted delivery, signature headers removed, for replay",
    ),
    TopicSpec(
        EVENTS,
        EVENT_PARTITIONS,
        {"retention.ms": str(14 * DAY_MS)},
        "canonical events, key = community_id",
    ),
    TopicSpec(
        WINDOWS,
        EVENT_PARTITIONS,
        # one live row per (community, window, start): compaction keeps the newest version
        {"cleanup.policy": "compact,delete", "retention.ms": str(90 * DAY_MS)},
        "window results, key = community|size|start, value carries a rising version",
    ),
    TopicSpec(
        FIRST_RESPONSES,
        EVENT_PARTITIONS,
        {"cleanup.policy": "compact,delete", "retention.ms": str(90 * DAY_MS)},
        "first non-author response per thread, key = community|thread",
    ),
    TopicSpec(
        HEALTH,
        EVENT_PARTITIONS,
        {"cleanup.policy": "compact,delete", "retention.ms": str(90 * DAY_MS)},
        "health snapshots when state, flags or responsiveness change, key = community_id",
    ),
    TopicSpec(
        TICKS,
        EVENT_PARTITIONS,
        {"retention.ms": str(DAY_MS)},
        "wall-clock ticks, one per owned partition, so idle communities close windows in order with events",
    ),
    TopicSpec(
        DEAD_LETTER,
        1,
        {"retention.ms": str(30 * DAY_MS)},
        "messages that could not be processed, with the reason in headers",
    ),
)


def topic_names(prefix: str = "") -> list[str]:
    return [prefix + t.name for t in TOPICS]
