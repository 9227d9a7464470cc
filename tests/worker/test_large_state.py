"""A community whose state outgrows Kafka's default record size (1 MB) is saved and restored.

Found by a 10-minute end-to-end run at 1,000 deliveries/s: after 4.5 minutes one simulated
channel's state was 1,002,102 bytes, the changelog write failed with MessageSizeTooLargeError
and the worker stopped (and would have stopped again at every restart). The changelog's record
limit was raised to 32 MiB then; since 2026-12-05 such a state is a head record and pages
(pipeline.core.state), each far smaller, and a worker with no local state restores it from
the changelog's records alone.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from kafka import KafkaConsumer, TopicPartition

from pipeline.core.state import PAGE_SEP, state_key
from pipeline.events import CanonicalEvent
from tests.faults.harness import metric_sum
from tests.worker.conftest import WorkerProcess, produce_events, unique_id

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

# a thread start keeps ~72 bytes of state (the thread and its event id): ~1.3 MB in all
THREADS = 18_000


def _thread_start(community: str, n: int, at: datetime) -> CanonicalEvent:
    return CanonicalEvent(
        event_id=f"{community}-e{n}",
        platform="slack",
        space_id="T1",
        community_id=community,
        kind="thread_started",
        actor_id=f"u{n % 40}",
        thread_id=f"t{n}",
        occurred_at=at,
        received_at=at,
    )


def _posts(worker: WorkerProcess, community: str) -> float | None:
    try:
        text = httpx.get(worker.url("/metrics"), timeout=10).text
    except httpx.HTTPError:  # not up yet, or gone: the caller looks at the process
        return None
    return metric_sum(text, "pulse_community_posts", community_id=community, range="24h")


def _wait_posts(worker: WorkerProcess, community: str, expected: float, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    posts = None
    while time.monotonic() < deadline:
        assert worker.process.poll() is None, f"worker exited:\n{worker.log_tail()}"
        posts = _posts(worker, community)
        if posts == expected:
            break
        time.sleep(0.5)
    return posts


def _state_records(bootstrap: str, topic: str, community: str, timeout: float) -> dict[bytes, int]:
    """Size of the latest changelog record of each key of the community's state (its head and
    its pages; deleted keys left out), waiting until they hold over 1 MiB."""
    head = state_key(community)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=2000)
    parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    consumer.assign(parts)
    consumer.seek_to_beginning()
    latest: dict[bytes, int] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and sum(latest.values()) <= 1024 * 1024:
        for message in consumer:
            if message.key == head or message.key.startswith(head + PAGE_SEP):
                if message.value is None:
                    latest.pop(message.key, None)
                else:
                    latest[message.key] = len(message.value)
    consumer.close()
    return latest


def test_a_state_over_one_megabyte_is_saved_and_restored(
    start_worker: Callable[..., WorkerProcess], kafka_bootstrap: str, topic_prefix: str
) -> None:
    community = f"slack:T1:CBIG{unique_id()}"
    start = datetime.now(UTC) - timedelta(minutes=30)
    events = [_thread_start(community, n, start + timedelta(milliseconds=100 * n)) for n in range(THREADS)]
    worker = start_worker()
    worker.wait_ready()
    produce_events(kafka_bootstrap, topic_prefix, events)
    assert _wait_posts(worker, community, THREADS, timeout=120) == THREADS

    changelog = topic_prefix + "pulse-worker-community-state-changelog"
    records = _state_records(kafka_bootstrap, changelog, community, timeout=60)
    total = sum(records.values())
    assert total > 1024 * 1024, f"the state in {changelog} is {total} bytes, not over 1 MiB\n{worker.log_tail()}"
    # in pages: no record near Kafka's default limit, and more than a head
    assert max(records.values()) < 256 * 1024 and len(records) > 50, records
    assert worker.process.poll() is None, f"worker exited:\n{worker.log_tail()}"
    assert worker.stop(signal.SIGTERM) == 0

    # a worker with no local state restores the community from the changelog alone
    again = start_worker(state_name="fresh")
    again.wait_ready()
    produce_events(kafka_bootstrap, topic_prefix, [_thread_start(community, THREADS, datetime.now(UTC))])
    assert _wait_posts(again, community, THREADS + 1, timeout=120) == THREADS + 1
