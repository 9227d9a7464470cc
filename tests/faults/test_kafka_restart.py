"""The Kafka broker stopped and started again under load, on a broker of the test's own.

While the broker is down the gateway answers 503 + Retry-After (never 2xx without Kafka's
acknowledgement), the senders retry, and once it is back every accepted event is counted
exactly once in the final windows in ClickHouse; the worker and the sink reconnect by
themselves (neither is restarted).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.stack.kafka import KafkaBroker
from tests.faults.conftest import Pipeline, make_pipeline
from tests.faults.harness import fault_events
from tests.faults.test_pipeline_faults import finish, load_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

DOWN_S = 6.0


@pytest.fixture
def private_pipeline(private_kafka_broker: KafkaBroker, tmp_path: Path, faults_chdb: Path) -> Iterator[Pipeline]:
    p = make_pipeline(private_kafka_broker.bootstrap, tmp_path / "pipeline", faults_chdb,
                      {"PULSE_PRODUCE_TIMEOUT_S": "2"})
    try:
        yield p
    finally:
        p.close()


def test_kafka_stopped_and_restarted_under_load(private_kafka_broker: KafkaBroker,
                                               private_pipeline: Pipeline) -> None:
    p, broker = private_pipeline, private_kafka_broker
    fe = fault_events("kafka", per_community=80)
    # the test is the worker's supervisor (compose: restart unless-stopped): Faust may exit when
    # its broker vanishes at a bad moment (NodeNotReadyError while re-declaring a topic)
    with p.supervised("a") as exits:
        load = load_for(p, fe, threads=4, pace_s=0.03).start()
        load.wait_accepted(0.3)
        broker.stop()
        stopped_at = time.monotonic()
        time.sleep(DOWN_S)  # the load goes on against a gateway without Kafka
        during = dict(load.statuses)
        broker.start()
        load.mark("kafka_back")
        broker.wait_ready(90)
        fault_end = time.monotonic()
        figures = finish(p, fe, load, "kafka_restart",
                         f"broker stopped at 30 % of the load for {DOWN_S:.0f} s (+ its restart), then started again",
                         fault_end=fault_end, broker_down_s=round(fault_end - stopped_at, 1),
                         worker_exits=exits, worker_restarted_by_supervisor=len(exits))
    # meanwhile the gateway said 503 (and only that: no 2xx without Kafka, no 500)
    assert during.get(503, 0) >= 1, during
    assert set(load.statuses) <= {202, 503}, load.statuses
    assert figures["missing"] == 0 and figures["counted_twice"] == 0
