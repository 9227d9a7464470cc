"""Produce and consume through the real session broker with kafka-python."""

from __future__ import annotations

import uuid

import pytest

from pipeline.config import Settings
from pipeline.stack.kafka import KafkaBroker
from pipeline.topics import EVENTS, TOPICS

pytestmark = pytest.mark.kafka


def _consume(bootstrap: str, topic: str, expected: int) -> list[tuple[bytes | None, bytes]]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"smoke-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=15_000,  # bounds the loop when messages are missing
    )
    try:
        received = []
        for message in consumer:
            received.append((message.key, message.value))
            if len(received) >= expected:
                break
        return received
    finally:
        consumer.close()


def test_topics_exist_with_their_partitions_and_configs(kafka_bootstrap: str, topic_prefix: str) -> None:
    from kafka.admin import ConfigResource, KafkaAdminClient

    names = [topic_prefix + spec.name for spec in TOPICS]
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        described = {t["name"]: t for t in admin.describe_topics(names)}
        configs = admin.describe_configs([ConfigResource("TOPIC", name) for name in names])["topic"]
    finally:
        admin.close()
    for spec in TOPICS:
        name = topic_prefix + spec.name
        assert described[name]["error_code"] == 0, described[name]
        assert len(described[name]["partitions"]) == spec.partitions
        for key, value in spec.configs.items():
            assert configs[name][key]["value"] == value, (name, key)


def test_create_topics_twice_creates_nothing_new(kafka_bootstrap: str, topic_prefix: str) -> None:
    from pipeline.stack.topics import create_topics

    assert create_topics(kafka_bootstrap, topic_prefix) == []


def test_idempotent_producer_round_trip(pulse_settings: Settings) -> None:
    from kafka import KafkaProducer

    topic = pulse_settings.topic(EVENTS)
    sent = [(f"community-{n % 3}".encode(), f"event-{n}-{uuid.uuid4().hex}".encode()) for n in range(20)]
    producer = KafkaProducer(bootstrap_servers=pulse_settings.kafka_bootstrap, acks="all", enable_idempotence=True)
    try:
        for key, value in sent:
            producer.send(topic, key=key, value=value).get(timeout=15)
        producer.flush(timeout=15)
    finally:
        producer.close()

    received = _consume(pulse_settings.kafka_bootstrap, topic, len(sent))
    assert sorted(received) == sorted(sent)
    # one key always lands on one partition, so per-key order is kept
    for key in {k for k, _ in sent}:
        assert [v for k, v in received if k == key] == [v for k, v in sent if k == key]


def test_private_broker_survives_a_restart(private_kafka_broker: KafkaBroker) -> None:
    from kafka import KafkaProducer

    from pipeline.stack.process import pid_alive
    from pipeline.stack.topics import create_topics

    broker = private_kafka_broker
    create_topics(broker.bootstrap, "p.")
    topic = "p." + EVENTS

    def produce(value: bytes) -> None:
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", enable_idempotence=True)
        try:
            producer.send(topic, key=b"k", value=value).get(timeout=15)
        finally:
            producer.close()

    produce(b"before")
    old_pid = broker.pid
    assert old_pid is not None
    broker.stop()
    assert not pid_alive(old_pid)
    broker.start()
    broker.wait_ready(60)
    assert broker.pid != old_pid
    produce(b"after")
    assert [v for _, v in _consume(broker.bootstrap, topic, 2)] == [b"before", b"after"]
