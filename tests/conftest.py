"""Shared fixtures: one real Kafka broker per test session, isolated topics per test.

* ``kafka_bootstrap`` (session): a single-node KRaft broker on free 127.0.0.1 ports in
  a temp dir, started lazily the first time a test asks for it; "127.0.0.1:PORT".
* ``topic_prefix`` (function): a fresh prefix "t-<hex>." with every topic of
  pipeline.topics.TOPICS created under it (deleted again after the test).
* ``pulse_settings`` (function): Settings pointing at that broker and prefix, with a
  temp state dir, an embedded ClickHouse in tmp_path and test secrets (TEST_SECRETS).
* ``private_kafka_broker`` (function): a dedicated, already-ready KafkaBroker a test
  may stop() and start()+wait_ready() again (the "Kafka is down" tests). It has no
  topics: call pipeline.stack.topics.create_topics(broker.bootstrap, prefix).

Every broker is stopped by pid: by the fixture's finalizer, by an atexit hook when a
run is interrupted, and by the kernel (parent-death signal) if pytest itself is killed.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from pipeline import config
from pipeline.stack.kafka import DEFAULT_JVM_OPTIONS, KafkaBroker
from pipeline.stack.process import StackError, free_port
from pipeline.stack.topics import create_topics, delete_topics

# test secrets: tests sign deliveries with these (never real ones)
TEST_SECRETS = {
    "PULSE_GITHUB_WEBHOOK_SECRET": "test-github-secret-0123456789",
    "PULSE_DISCOURSE_WEBHOOK_SECRET": "test-discourse-secret-0123456789",
    "PULSE_SLACK_SIGNING_SECRET": "test-slack-signing-secret-0123456789",
    "PULSE_INGEST_TOKENS": "tester=" + "t0k3n" * 6 + "ab",  # 32 characters
}

# only the JIT's first tier: the broker is ready sooner and uses less CPU on 2 cores
TEST_JVM_OPTIONS = (*DEFAULT_JVM_OPTIONS, "-XX:TieredStopAtLevel=1")
READY_TIMEOUT_S = 90.0

_started: list[KafkaBroker] = []

# Property tests draw new examples on every run, and have found real bugs that way (three in
# one week, each failing one run in a few). CI (.ci/run sets HYPOTHESIS_PROFILE=ci) draws the
# same examples every run, so a red CI means a change broke something; runs elsewhere explore.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def _stop_all() -> None:
    while _started:
        broker = _started.pop()
        with contextlib.suppress(Exception):
            broker.stop()


atexit.register(_stop_all)


def _new_broker(data_dir: Path) -> KafkaBroker:
    # a free port can be taken by another process before the broker binds it (other
    # engineers' tests run alongside): then try again with fresh ports
    for attempt in range(3):
        broker = KafkaBroker(
            data_dir,
            free_port(),
            free_port(),
            jvm_options=TEST_JVM_OPTIONS,
            die_with_parent=True,
            stop_timeout=15.0,
        )
        _started.append(broker)
        try:
            broker.start()
            broker.wait_ready(READY_TIMEOUT_S)
            return broker
        except StackError as exc:
            _forget(broker)
            if attempt == 2 or not _port_taken(str(exc)):
                raise
    raise AssertionError("unreachable")


def _port_taken(message: str) -> bool:
    return "already in use" in message or "BindException" in message


def _forget(broker: KafkaBroker) -> None:
    broker.stop()
    with contextlib.suppress(ValueError):
        _started.remove(broker)


def pytest_configure(config: pytest.Config) -> None:
    # pyproject registers these too; repeating them keeps the suite working from any rootdir
    config.addinivalue_line("markers", "kafka: needs the real local Kafka broker (started once per session)")
    config.addinivalue_line("markers", "prometheus: needs the Debian prometheus binary")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    data_dir = Path(tempfile.mkdtemp(prefix="pulse-kafka-"))
    try:
        broker = _new_broker(data_dir)
        try:
            yield broker.bootstrap
        finally:
            _forget(broker)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def topic_prefix(kafka_bootstrap: str) -> Iterator[str]:
    prefix = f"t-{uuid.uuid4().hex[:12]}."
    create_topics(kafka_bootstrap, prefix)
    yield prefix
    # keep the session broker small: hundreds of tests would otherwise leave thousands of partitions
    with contextlib.suppress(Exception):
        delete_topics(kafka_bootstrap, prefix)


@pytest.fixture
def pulse_settings(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> config.Settings:
    return config.load(
        {
            "PULSE_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "PULSE_TOPIC_PREFIX": topic_prefix,
            "PULSE_STATE_DIR": str(tmp_path / "state"),
            "PULSE_CLICKHOUSE_URL": f"chdb://{tmp_path / 'ch'}",
            **TEST_SECRETS,
        }
    )


@pytest.fixture
def private_kafka_broker(tmp_path: Path) -> Iterator[KafkaBroker]:
    broker = _new_broker(tmp_path / "private-kafka")
    try:
        yield broker
    finally:
        _forget(broker)
