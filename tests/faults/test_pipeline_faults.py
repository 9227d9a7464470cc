"""Faults under load, end to end: every accepted event is counted exactly once.

One pipeline per module (conftest): ``pulse gateway`` -> Kafka -> ``pulse worker`` -> the
ClickHouse sink -> embedded ClickHouse. Each test sends a few hundred canonical events
through ``POST /v1/events`` from several threads that retry like a platform (503/429 and
lost connections), injects one fault while they run, then sends one sentinel per
community (which makes every hourly window of the events final) and compares:

* accepted: the distinct events of the requests that got a 2xx answer;
* landed: threads/replies/posts summed over the final hourly windows in ClickHouse.

They must be equal per community: more would be a duplicate counted, less a loss.
Measured figures go to $RELIABILITY_REPORT_DIR (bench/reliability_report.py renders them).
"""

from __future__ import annotations

import json
import random
import signal
import time
from typing import Any

import httpx
import pytest
from kafka import KafkaProducer

from pipeline import topics
from tests.faults.conftest import Pipeline
from tests.faults.harness import (
    HOUR_MS,
    FaultEvents,
    Load,
    count_records,
    event,
    expected_counts,
    fault_events,
    landed,
    metric_sum,
    record,
    stored_events,
    topic_records,
    totals,
    wait_landed,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

LANDED_TIMEOUT_S = 150.0


def load_for(p: Pipeline, fe: FaultEvents, *, pace_s: float = 0.02, threads: int = 3,
             batches: list[list[dict[str, Any]]] | None = None) -> Load:
    return Load(lambda: p.gateway.url, p.token, batches if batches is not None else fe.batches,
                threads=threads, pace_s=pace_s)


def send_sentinels(p: Pipeline, fe: FaultEvents) -> None:
    sentinels = Load(lambda: p.gateway.url, p.token, [fe.sentinels], threads=1).start().join()
    assert not sentinels.refused, sentinels.refused


def finish(p: Pipeline, fe: FaultEvents, load: Load, fault: str, injected: str, *,
           fault_end: float | None = None, sentinels_sent: bool = False, duplicated_on_purpose: int = 0,
           **extra: Any) -> dict[str, Any]:
    """Join the load, send the sentinels, wait for what landed, record and check it."""
    load.join()
    assert not load.refused, load.refused[:3]
    if not sentinels_sent:
        send_sentinels(p, fe)
    expected = expected_counts(load.accepted)
    # every event was eventually accepted (senders retry), so the whole set is what must land
    assert expected == expected_counts(fe.events)
    got, done_at = wait_landed(p.db, expected, timeout=LANDED_TIMEOUT_S)
    records, distinct = count_records(topic_records(p.bootstrap, p.topic(topics.EVENTS)), set(fe.communities))
    stored_rows, stored_distinct = stored_events(p.db, fe.communities)
    accepted_t, landed_t = totals(expected), totals(got)
    figures = {
        "injected": injected,
        "events_sent": len(fe.events),
        "accepted_events": accepted_t["posts"],
        "landed_posts": landed_t["posts"],
        "landed_threads": landed_t["threads_started"],
        "landed_replies": landed_t["replies"],
        "missing": max(0, accepted_t["posts"] - landed_t["posts"]),
        "counted_twice": max(0, landed_t["posts"] - accepted_t["posts"]),
        "events_topic_records": records,
        "events_topic_distinct": distinct,
        "stored_events": stored_rows,
        "stored_distinct": stored_distinct,
        "recovery_s": round(done_at - fault_end, 2) if fault_end is not None else None,
        "first_2xx_after_s": load.first_2xx_after,
        **load.summary(),
        **extra,
    }
    record(fault, **figures)
    assert got == expected, f"{fault}: landed {landed_t} != accepted {accepted_t}"
    # idempotent producing: a record on the topic twice is explained by a request the sender
    # had to retry (a 503 or no answer); the producer's own retries never add copies
    retried = figures["http_503"] + figures["connection_errors"]
    assert records - distinct <= retried * max(len(b) for b in fe.batches) + duplicated_on_purpose, figures
    # the store keeps each canonical event once (+ the sentinels), whatever the redeliveries
    assert stored_distinct == len({e["event_id"] for e in fe.events}) + len(fe.sentinels)
    return figures


def worker_metrics(p: Pipeline, name: str = "a") -> str:
    return httpx.get(p.workers[name].url("/metrics"), timeout=5).text


# ------------------------------------------------------------------ control


def test_no_fault_control(pipeline: Pipeline) -> None:
    fe = fault_events("control")
    load = load_for(pipeline, fe, pace_s=0.0).start()
    finish(pipeline, fe, load, "control", "nothing (the same load without a fault)")


# ------------------------------------------------------------------ worker crash, rebalance


def test_worker_killed_under_load_then_restarted(pipeline: Pipeline) -> None:
    p = pipeline
    fe = fault_events("sigkill", per_community=80)
    load = load_for(p, fe).start()
    load.wait_accepted(0.3)
    worker = p.workers["a"]
    assert worker.stop(signal.SIGKILL) == -signal.SIGKILL
    load.wait_accepted(0.5)  # the gateway does not need the worker: acceptance goes on
    restarted = p.start_worker("a")  # same state dir: RocksDB as the killed worker left it
    restarted.wait_ready()
    fault_end = time.monotonic()
    finish(p, fe, load, "worker_sigkill", "SIGKILL of the only worker at 30 % of the load, restart at 50 %",
           fault_end=fault_end)


def test_second_worker_joins_and_leaves_under_load(pipeline: Pipeline) -> None:
    p = pipeline
    fe = fault_events("rebalance", per_community=80)
    load = load_for(p, fe, pace_s=0.04).start()
    load.wait_accepted(0.15)
    second = p.start_worker("b")
    second.wait_ready()
    load.wait_accepted(0.7)
    assert second.stop(signal.SIGTERM) == 0  # leaves cleanly: another rebalance
    fault_end = time.monotonic()
    finish(p, fe, load, "worker_rebalance",
           "a second worker joins at 15 % of the load (rebalance), leaves at 70 % (rebalance)",
           fault_end=fault_end)


# ------------------------------------------------------------------ ClickHouse refuses writes


def test_clickhouse_refusing_writes_then_back(pipeline: Pipeline) -> None:
    p = pipeline
    assert p.sink is not None
    fe = fault_events("clickhouse")
    failures_before = p.sink.stats.failures
    p.db.command("DETACH TABLE window_results")
    outage_started = time.monotonic()
    try:
        load = load_for(p, fe, pace_s=0.0).start().join()
        send_sentinels(p, fe)
        deadline = time.monotonic() + 60
        # a real outage: the sink must have been refused several times and held on for 5 s
        while not (p.sink.held and p.sink.stats.failures >= failures_before + 5
                   and time.monotonic() - outage_started >= 5):
            assert time.monotonic() < deadline, f"the sink never hit the outage: {p.sink.stats}"
            time.sleep(0.2)
        failures = p.sink.stats.failures - failures_before
    finally:
        p.db.command("ATTACH TABLE window_results")
    fault_end = time.monotonic()
    finish(p, fe, load, "clickhouse_outage",
           "window_results DETACHed (every insert refused) during the whole load, ATTACHed again",
           fault_end=fault_end, sentinels_sent=True, outage_s=round(fault_end - outage_started, 1),
           sink_failed_inserts=failures)


# ------------------------------------------------------------------ poison on engagement.events


def test_poison_messages_go_to_dead_letter_and_the_rest_is_counted(pipeline: Pipeline) -> None:
    p = pipeline
    fe = fault_events("poison")
    poison = [b"{not json", b"\xff\xfe\x00 not utf-8", json.dumps({"event_id": "no-other-fields"}).encode()]
    load = load_for(p, fe).start()
    load.wait_accepted(0.3)
    producer = KafkaProducer(bootstrap_servers=p.bootstrap, acks="all")
    for value in poison:
        producer.send(p.topic(topics.EVENTS), key=fe.communities[0].encode(), value=value)
    producer.flush(30)
    producer.close()
    finish(p, fe, load, "poison_message", f"{len(poison)} undecodable messages on engagement.events mid-load",
           dead_lettered=len(poison))
    # the worker dead-letters each once (the sink, which also stores engagement.events, does too:
    # its letters carry a "stage" header)
    letters = [r for r in topic_records(p.bootstrap, p.topic(topics.DEAD_LETTER)) if r.value in poison]
    by_worker = [r for r in letters if "stage" not in dict(r.headers)]
    assert sorted(r.value for r in by_worker) == sorted(poison)
    for letter in by_worker:
        headers = {k: v.decode() for k, v in letter.headers}
        assert headers["reason"] and headers["source_topic"] == p.topic(topics.EVENTS)


# ------------------------------------------------------------------ duplicates, order, time


def test_duplicates_out_of_order_and_events_far_in_the_past(pipeline: Pipeline) -> None:
    p = pipeline
    fe = fault_events("dupes", per_community=50, seed=3)
    rng = random.Random(5)
    # every event delivered twice, the copies in other batches and the whole lot shuffled
    copies = [e for b in fe.batches for e in b]
    rng.shuffle(copies)
    redelivered = [copies[i : i + 7] for i in range(0, len(copies), 7)]
    batches = fe.batches + redelivered
    rng.shuffle(batches)
    before = worker_metrics(p)
    load = load_for(p, fe, batches=batches, pace_s=0.0).start()
    figures = finish(p, fe, load, "duplicates_out_of_order",
                     "every event delivered twice, in other batches, shuffled over a 6 h span",
                     duplicated_on_purpose=len(copies))
    assert figures["events_topic_records"] >= 2 * len(fe.events)  # the duplicates did reach the worker

    # far in the past: 3 days before the community's stream time, beyond max lateness (24 h):
    # accepted, counted as late-dropped, stored raw, and no window changes (DESIGN: time and windows)
    community = fe.communities[0]
    old = [event(fe.tag, community, 20_000 + i, fe.base_ms - 24 * HOUR_MS + i * 60_000) for i in range(5)]
    old_load = Load(lambda: p.gateway.url, p.token, [old], threads=1).start().join()
    assert not old_load.refused
    deadline = time.monotonic() + 60
    dropped = 0.0
    while time.monotonic() < deadline:
        dropped = metric_sum(worker_metrics(p), "pulse_worker_late_events_total", outcome="dropped") - metric_sum(
            before, "pulse_worker_late_events_total", outcome="dropped")
        if dropped >= len(old):
            break
        time.sleep(0.5)
    duplicates = metric_sum(worker_metrics(p), "pulse_worker_duplicates_total") - metric_sum(
        before, "pulse_worker_duplicates_total")
    time.sleep(2)  # give a wrongly reopened window time to show up before looking
    after = landed(p.db, fe.communities)
    record("far_past", injected="5 events 3 days older than their community's stream time (max lateness 24 h)",
           accepted_events=len(old), late_dropped=dropped, landed_posts_change=totals(after)["posts"]
           - figures["landed_posts"], rule="2xx, counted as late (dropped), stored raw, windows unchanged")
    assert dropped == len(old)
    assert after == expected_counts(fe.events)
    assert duplicates >= len(fe.events)
    rows, _ = stored_events(p.db, [community])
    deadline = time.monotonic() + 30
    while rows < len(expected_ids := {e["event_id"] for e in fe.events if e["community_id"] == community}) + 1 + len(
            old) and time.monotonic() < deadline:
        time.sleep(0.5)
        rows, _ = stored_events(p.db, [community])
    assert rows == len(expected_ids) + 1 + len(old)  # events, the sentinel and the late ones, raw


def test_an_event_far_in_the_future_does_not_make_later_events_late(pipeline: Pipeline) -> None:
    """Rule (core engine, max_future_ms = 1 h): an event further ahead of the wall clock is
    accepted and stored raw but never applied, so it cannot push the community's stream time
    ahead and make its later ordinary events look late."""
    p = pipeline
    fe = fault_events("future", communities=1, per_community=20)
    community = fe.communities[0]
    future = event(fe.tag, community, 30_000, int(time.time() * 1000) + 30 * 24 * HOUR_MS)
    first, rest = fe.batches[: len(fe.batches) // 2], fe.batches[len(fe.batches) // 2 :]
    Load(lambda: p.gateway.url, p.token, first, threads=1).start().join()
    answer = httpx.post(p.gateway.url + "/v1/events", json=[future],
                        headers={"authorization": f"Bearer {p.token}"}, timeout=30)
    Load(lambda: p.gateway.url, p.token, rest, threads=1).start().join()
    send_sentinels(p, fe)
    expected = expected_counts(fe.events)
    got, _ = wait_landed(p.db, expected, timeout=60)
    record("far_future", injected="1 event 30 days in the future, between two halves of a community's events",
           future_answer=answer.status_code, accepted_events=totals(expected)["posts"],
           landed_posts=totals(got)["posts"], missing=totals(expected)["posts"] - totals(got)["posts"],
           rule="2xx, stored raw, never applied by the engine (more than max_future_ms = 1 h ahead)")
    assert answer.status_code == 202, answer.text
    assert got == expected


# ------------------------------------------------------------------ the gateway restarts


def test_gateway_restarted_and_crashed_with_requests_in_flight(pipeline: Pipeline) -> None:
    p = pipeline
    fe = fault_events("gateway", per_community=80)
    load = load_for(p, fe, threads=4, pace_s=0.01).start()
    load.wait_accepted(0.25)
    p.gateway.stop(signal.SIGTERM)  # graceful: in-flight requests are answered, new ones refused
    p.gateway.start()
    load.mark("sigterm_restart")
    p.gateway.wait_ready()
    load.wait_accepted(0.6)
    p.gateway.stop(signal.SIGKILL)  # a crash: in-flight requests get no answer and are retried
    p.gateway.start()
    load.mark("sigkill_restart")
    p.gateway.wait_ready()
    fault_end = time.monotonic()
    finish(p, fe, load, "gateway_restart",
           "gateway SIGTERM + restart at 25 % of the load, SIGKILL + restart at 60 %", fault_end=fault_end)
