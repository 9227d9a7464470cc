"""`pulse simulate`'s sender against the real `pulse gateway` process and the real Kafka broker.

What the simulator sends must be accepted by the gateway as it is, and exactly the
events our adapters make of those requests must land on ``engagement.events``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from kafka import KafkaConsumer, TopicPartition

from pipeline import topics
from pipeline.config import Settings
from pipeline.gateway.adapters import Delivery, adapt, adapt_generic
from pipeline.simulate.generate import PLATFORMS, Spec, generate
from pipeline.simulate.model import Request
from pipeline.simulate.render import Credentials, resign_slack
from pipeline.simulate.send import send

pytestmark = pytest.mark.kafka
WAIT_S = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def gateway_url(pulse_settings: Settings, tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    s = pulse_settings
    env = {
        "PATH": "/usr/bin:/bin",
        "PULSE_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
        "PULSE_TOPIC_PREFIX": s.topic_prefix,
        "PULSE_STATE_DIR": str(tmp_path / "gateway-state"),
        "PULSE_GATEWAY_HOST": "127.0.0.1",
        "PULSE_GATEWAY_PORT": str(port),
        "PULSE_GITHUB_WEBHOOK_SECRET": s.github_webhook_secret.reveal(),  # type: ignore[union-attr]
        "PULSE_DISCOURSE_WEBHOOK_SECRET": s.discourse_webhook_secret.reveal(),  # type: ignore[union-attr]
        "PULSE_SLACK_SIGNING_SECRET": s.slack_signing_secret.reveal(),  # type: ignore[union-attr]
        "PULSE_INGEST_TOKENS": ",".join(f"{k}={v.reveal()}" for k, v in s.ingest_tokens.items()),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "gateway"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + WAIT_S
        with httpx.Client(base_url=url, timeout=5) as client:
            while True:
                assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
                with contextlib.suppress(httpx.TransportError):
                    if client.get("/readyz").status_code == 200:
                        break
                assert time.monotonic() < deadline, "pulse gateway did not become ready"
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _expected_ids(requests: list[Request]) -> tuple[set[str], int]:
    """Event ids our adapters make of the requests, and how many requests carry events."""
    ids: set[str] = set()
    with_events = 0
    now = datetime.now(UTC)
    for r in requests:
        headers = {k.lower(): v for k, v in r.headers.items()}
        if r.platform == "generic":
            events = adapt_generic(r.body, headers["content-type"], "tester", now)
        else:
            events = list(adapt(Delivery(r.platform, headers, r.body, now)).events)
        ids |= {e.event_id for e in events}
        with_events += bool(events)
    return ids, with_events


def _read_all(bootstrap: str, topic: str, at_least: int) -> list[bytes]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        values: list[bytes] = []
        deadline = time.monotonic() + WAIT_S
        while len(values) < at_least and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=250).values():
                values += [record.value for record in batch]
        for batch in consumer.poll(timeout_ms=500).values():  # anything beyond must show too
            values += [record.value for record in batch]
        return values
    finally:
        consumer.close()


def test_simulated_deliveries_land_on_kafka_as_our_adapters_say(pulse_settings: Settings, gateway_url: str) -> None:
    credentials = Credentials.from_settings(pulse_settings)
    spec = Spec(len(PLATFORMS) * 2, ("healthy", "when_we_can"), PLATFORMS, 2, datetime.now(UTC), seed=11)
    # signed an hour ago: the sender must sign Slack again or the gateway refuses it
    requests = generate(spec, credentials, time.time() - 3600)
    slack_secret = credentials.slack
    assert slack_secret
    summary = send(
        requests,
        gateway_url,
        concurrency=4,
        progress=None,
        prepare=lambda r: resign_slack(r, slack_secret, time.time()),
    )
    assert summary.ok, summary.format()
    assert summary.sent == len(requests)
    expected, with_events = _expected_ids(requests)
    assert summary.accepted == with_events
    values = _read_all(pulse_settings.kafka_bootstrap, pulse_settings.topic(topics.EVENTS), summary.events)
    landed = [json.loads(v)["event_id"] for v in values]
    assert len(landed) == summary.events
    assert set(landed) == expected
