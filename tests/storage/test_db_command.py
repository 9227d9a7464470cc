"""`pulse db migrate` as a user runs it (a separate process, its own embedded store)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from storage_samples import health

from pipeline import config, topics
from pipeline.storage.sink import SINK_GROUP

ROOT = Path(__file__).resolve().parents[2]


def pulse(*argv: str, store: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env["PULSE_CLICKHOUSE_URL"] = f"chdb://{store}"
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_db_migrate_applies_once_then_reports_up_to_date(tmp_path: Path) -> None:
    store = tmp_path / "ch"
    first = pulse("db", "migrate", store=store)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("applied: 0001_events.sql, 0002_window_results.sql")
    again = pulse("db", "migrate", "--events-ttl-days", "30", store=store)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == ["schema is up to date", "raw events are kept 30 days"]


def test_db_without_an_action_shows_usage(tmp_path: Path) -> None:
    done = pulse("db", store=tmp_path / "ch")
    assert done.returncode == 2
    assert "migrate" in done.stderr and "sink" in done.stderr


@pytest.mark.kafka
def test_db_sink_then_report_end_to_end(pulse_settings: config.Settings, tmp_path: Path) -> None:
    """`pulse db sink` stores what the worker would emit; `pulse report` then reads the store."""
    store = tmp_path / "e2e-ch"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update(
        {
            "PULSE_KAFKA_BOOTSTRAP": pulse_settings.kafka_bootstrap,
            "PULSE_TOPIC_PREFIX": pulse_settings.topic_prefix,
            "PULSE_CLICKHOUSE_URL": f"chdb://{store}",
            "PULSE_WORKER_PORT": str(free_port()),  # no worker: report reads the store
        }
    )
    snapshots = [
        health("a", "dying", 5, previous="healthy"),
        health("b", "dead", 1, platform="github"),
        health("a", "healthy", 1),
    ]
    producer = KafkaProducer(bootstrap_servers=pulse_settings.kafka_bootstrap, acks="all")
    for s in snapshots:
        producer.send(pulse_settings.topic(topics.HEALTH), key=s.community_id.encode(), value=s.to_json_bytes())
    producer.flush(30)
    producer.close(5)

    log = (tmp_path / "sink.log").open("w")
    sink = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "db", "sink", "--batch-seconds", "0.2"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        group = pulse_settings.topic_prefix + SINK_GROUP
        deadline = time.monotonic() + 90
        while committed(pulse_settings, group) < len(snapshots):
            assert sink.poll() is None, (tmp_path / "sink.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "sink.log").read_text()
            time.sleep(0.5)
        sink.send_signal(signal.SIGTERM)
        assert sink.wait(60) == 0
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait(10)
        log.close()
    assert "sink stopped: 3 rows" in (tmp_path / "sink.log").read_text()

    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "report", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert [(r["community_id"], r["state"]) for r in json.loads(done.stdout)] == [("b", "dead"), ("a", "dying")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def committed(settings: config.Settings, group: str) -> int:
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
