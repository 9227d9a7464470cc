"""The worker's Kafka consumer: Faust's settings, but a short fetch wait (see topics.CONSUMER_FETCH_WAIT_MS)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pipeline import config, topics
from pipeline.worker.app import PulseWorker


def test_the_worker_consumer_holds_a_fetch_briefly_and_keeps_faust_settings(tmp_path: Path) -> None:
    # nothing listens on port 1: building the consumer does not connect
    settings = config.load({"PULSE_KAFKA_BOOTSTRAP": "127.0.0.1:1", "PULSE_STATE_DIR": str(tmp_path)})
    worker = PulseWorker(settings)

    async def build() -> tuple[int, str, bool]:
        consumer = worker.app.consumer._thread._create_worker_consumer(worker.app.transport)  # type: ignore[attr-defined]
        try:
            return consumer._fetch_max_wait_ms, consumer._group_id, consumer._enable_auto_commit
        finally:
            await consumer.stop()  # never started: only releases its client

    wait_ms, group_id, auto_commit = asyncio.run(build())
    assert wait_ms == topics.CONSUMER_FETCH_WAIT_MS < 1500  # Faust's own is 1,500 ms
    assert group_id == settings.topic("pulse-worker")
    assert auto_commit is False  # Faust commits itself
