"""Run the real worker (`pulse worker`) as a subprocess against the session broker."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from pipeline import config, topics
from pipeline.events import CanonicalEvent
from pipeline.stack.process import free_port
from tests.conftest import TEST_SECRETS

START_TIMEOUT_S = 90.0


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_file: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url("/healthz"), timeout=1.0).status_code == 200:
                    return
            time.sleep(0.5)
        raise AssertionError(f"worker not ready after {timeout} s:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@pytest.fixture
def worker_env(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update(
        {
            "PULSE_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "PULSE_TOPIC_PREFIX": topic_prefix,
            "PULSE_STATE_DIR": str(tmp_path / "state"),
            "PULSE_CLICKHOUSE_URL": f"chdb://{tmp_path / 'ch'}",
            "PULSE_LOG_LEVEL": "INFO",
            **TEST_SECRETS,
        }
    )
    return env


@pytest.fixture
def start_worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(state_name: str = "state", extra_env: dict[str, str] | None = None, sink: bool = False) -> WorkerProcess:
        port = free_port()
        env = {
            **worker_env,
            "PULSE_WORKER_PORT": str(port),
            "PULSE_STATE_DIR": str(tmp_path / state_name),
            # one embedded ClickHouse per process: chDB lets a single process open a path
            "PULSE_CLICKHOUSE_URL": f"chdb://{tmp_path / ('ch-' + state_name)}",
        }
        env.update(extra_env or {})
        log_file = tmp_path / f"worker-{len(started)}.log"
        args = [sys.executable, "-m", "pipeline.cli", "worker"] + ([] if sink else ["--no-sink"])
        with open(log_file, "wb") as log:
            process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        worker = WorkerProcess(process, port, log_file)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop(signal.SIGKILL, timeout=10)


def produce_events(bootstrap: str, prefix: str, events: Iterable[CanonicalEvent]) -> int:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    n = 0
    for event in events:
        producer.send(prefix + topics.EVENTS, key=event.community_id.encode(), value=event.to_json_bytes())
        n += 1
    producer.flush(60)
    producer.close()
    return n


def read_topic(bootstrap: str, topic: str, *, idle_s: float = 3.0, max_s: float = 60.0) -> list[dict[str, object]]:
    """Every message of a topic from the start, until none arrived for idle_s."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=int(idle_s * 1000),
    )
    parts = consumer.partitions_for_topic(topic) or set()
    consumer.assign([TopicPartition(topic, p) for p in parts])
    consumer.seek_to_beginning()
    rows: list[dict[str, object]] = []
    deadline = time.monotonic() + max_s
    for message in consumer:
        rows.append(json.loads(message.value))
        if time.monotonic() > deadline:
            break
    consumer.close()
    return rows


def unique_id() -> str:
    return uuid.uuid4().hex[:8]


__all__ = ["WorkerProcess", "config", "produce_events", "read_topic", "unique_id"]
