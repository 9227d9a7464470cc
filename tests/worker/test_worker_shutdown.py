"""`pulse worker` stops on SIGTERM in bounded time, even when its broker is gone, and does not
flood its log meanwhile.

Without a broker Faust's consumer thread can die on the way down (aiokafka's fetcher raises
CancelledError out of its close), and Faust's stop then waits for it forever: the worker had
to be killed. Compose, `pulse run` and the tests stop processes by pid and expect them to go.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable

import pytest

from pipeline.stack.kafka import KafkaBroker
from pipeline.stack.topics import create_topics
from pipeline.worker.app import SHUTDOWN_TIMEOUT_S
from tests.worker.conftest import WorkerProcess

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_sigterm_stops_a_worker_whose_broker_is_gone(
    start_worker: Callable[..., WorkerProcess], private_kafka_broker: KafkaBroker, topic_prefix: str
) -> None:
    create_topics(private_kafka_broker.bootstrap, topic_prefix)
    worker = start_worker(extra_env={"PULSE_KAFKA_BOOTSTRAP": private_kafka_broker.bootstrap}, sink=True)
    worker.wait_ready()
    time.sleep(5)  # the group is joined and partitions are assigned
    private_kafka_broker.stop()
    time.sleep(8)  # consumer, producer and sink now fail to reach it
    worker.process.send_signal(signal.SIGTERM)
    try:
        worker.process.wait(SHUTDOWN_TIMEOUT_S + 20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"worker still running {SHUTDOWN_TIMEOUT_S + 20:.0f} s after SIGTERM:\n{worker.log_tail()}")
    # 0: Faust's stop finished; 1: the deadline ended it (not killed by the signal itself)
    assert worker.process.returncode in (0, 1), worker.log_tail()
    # aiokafka's connection errors came about ten a second; repeats are held back (pipeline.logs)
    connect_errors = worker.log_file.read_text(errors="replace").count("Unable connect to node")
    assert 1 <= connect_errors <= 5, f"{connect_errors} connection errors logged in about 10 s"
