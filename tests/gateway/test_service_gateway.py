"""The gateway as a service: the real app under uvicorn, the real broker, real HTTP.

Each test runs ``create_app(settings, KafkaDeliveryProducer(settings))`` under uvicorn
on a 127.0.0.1 socket the OS picked, in a background thread stopped at the end, then
sends signed deliveries with httpx and reads back what landed on Kafka.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import uvicorn
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from prometheus_client import CollectorRegistry

from pipeline import config, topics
from pipeline.config import Settings
from pipeline.events import CanonicalEvent
from pipeline.gateway import adapters, signatures
from pipeline.gateway.app import create_app
from pipeline.gateway.producer import H_PLATFORM, KafkaDeliveryProducer, is_secret_header
from pipeline.replay.recorded import Recorded, read_path, route, signed_headers
from pipeline.stack.kafka import KafkaBroker
from pipeline.stack.process import free_port
from pipeline.stack.topics import create_topics

pytestmark = pytest.mark.kafka

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "webhooks"
WAIT_S = 30.0  # upper bound for anything to show up; never a timing assertion


# ---------------------------------------------------------------- harness


@contextlib.contextmanager
def serve(settings: Settings, registry: CollectorRegistry | None = None) -> Iterator[str]:
    """The real app under uvicorn in a thread, on a socket bound to 127.0.0.1:0."""
    app = create_app(settings, KafkaDeliveryProducer(settings), registry=registry)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + WAIT_S
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped during start-up"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()


def wait_ready(client: httpx.Client) -> None:
    deadline = time.monotonic() + WAIT_S
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "gateway never became ready"
        time.sleep(0.1)


def consume(bootstrap: str, topic: str, at_least: int) -> list[ConsumerRecord]:
    """Every record of ``topic`` from the beginning: waits (bounded) for ``at_least``, then drains."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        assert partitions, f"topic {topic} has no partitions"
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + WAIT_S
        while len(records) < at_least and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=250).values():
                records.extend(batch)
        # anything beyond what we expect must show up too, so that "exactly" assertions can fail
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
        return records
    finally:
        consumer.close()


def send(client: httpx.Client, settings: Settings, recorded: Recorded) -> httpx.Response:
    headers = signed_headers(recorded, settings, time.time())
    return client.post(route(recorded), content=recorded.body, headers=headers)


def fixture_deliveries() -> list[Recorded]:
    return [r for platform in ("github", "discourse", "slack") for r in read_path(FIXTURES / platform)]


def expected_events(recorded: Recorded) -> tuple[CanonicalEvent, ...]:
    """What the pure adapter makes of a delivery (event ids do not depend on arrival time)."""
    delivery = adapters.Delivery(recorded.platform, dict(recorded.headers), recorded.body, datetime.now(UTC))
    return adapters.adapt(delivery).events


def metric_value(text: str, series: str) -> float:
    line = next(x for x in text.splitlines() if x.startswith(series + " "))
    return float(line.rsplit(" ", 1)[1])


def error_of(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert set(body) == {"error", "field", "reason"}, body
    assert isinstance(body["error"], str) and isinstance(body["reason"], str)
    return body


# ---------------------------------------------------------------- deliveries land on Kafka


def test_signed_fixture_deliveries_land_on_kafka(pulse_settings: Settings) -> None:
    settings = pulse_settings
    deliveries = fixture_deliveries()
    accepted: list[Recorded] = []
    expected: list[CanonicalEvent] = []
    with serve(settings) as url, httpx.Client(base_url=url, timeout=WAIT_S) as client:
        wait_ready(client)
        for recorded in deliveries:
            response = send(client, settings, recorded)
            events = expected_events(recorded)
            body = response.json()
            if recorded.platform == "slack" and b"url_verification" in recorded.body:
                assert response.status_code == 200, body
                assert body["challenge"] == json.loads(recorded.body)["challenge"]
            elif events:
                assert response.status_code == 202, (recorded.source, body)
                assert body["status"] == "accepted" and body["events"] == len(events)
                accepted.append(recorded)
                expected.extend(events)
            else:
                assert response.status_code == 202, (recorded.source, body)
                assert body["status"] == "ignored" and body["reason"]
        metrics_text = client.get("/metrics").text

    assert {r.platform for r in accepted} == {"github", "discourse", "slack"}
    raw = consume(settings.kafka_bootstrap, settings.topic(topics.RAW), len(accepted))
    events = consume(settings.kafka_bootstrap, settings.topic(topics.EVENTS), len(expected))

    # raw: one record per accepted delivery, the exact body, no signature header, platform stamped
    assert sorted(r.value for r in raw) == sorted(r.body for r in accepted)
    for record in raw:
        names = [name for name, _ in record.headers]
        assert not any(is_secret_header(name) for name in names), names
        platform = dict(record.headers)[H_PLATFORM].decode()
        assert platform in ("github", "discourse", "slack")
    secrets = [s.reveal().encode() for s in (settings.github_webhook_secret, settings.slack_signing_secret,
                                             settings.discourse_webhook_secret) if s]
    for record in raw:
        blob = record.value + b"".join(v for _, v in record.headers)
        assert not any(secret in blob for secret in secrets)

    # events: exactly the adapter's events (two fixtures may carry the same action), keyed by community
    landed = [CanonicalEvent.from_json_bytes(r.value) for r in events]
    assert sorted((e.event_id, e.community_id) for e in landed) == sorted(
        (e.event_id, e.community_id) for e in expected
    )
    for record, event in zip(events, landed, strict=True):
        assert record.key == event.community_id.encode()

    # accepted counts every 2xx (stored or ignored); the produce histogram one per stored delivery
    github_2xx = sum(1 for r in deliveries if r.platform == "github")
    assert metric_value(metrics_text, 'pulse_gateway_deliveries_accepted_total{platform="github"}') == github_2xx
    assert metric_value(metrics_text, "pulse_gateway_produce_latency_seconds_count") == len(accepted)


def test_generic_events_as_json_array_and_ndjson(pulse_settings: Settings) -> None:
    settings = pulse_settings
    token = settings.ingest_tokens["tester"].reveal()
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")

    def event(n: int, community: str) -> dict[str, object]:
        return {"event_id": f"gen-{n}", "platform": "forum", "space_id": "inhouse", "community_id": community,
                "kind": "reply" if n % 2 else "thread_started", "actor_id": f"u{n}", "occurred_at": now}

    array = [event(n, "c-a") for n in range(3)]
    ndjson = "\n".join(json.dumps(event(n, "c-b")) for n in range(3, 8)) + "\n"
    auth = {"authorization": f"Bearer {token}"}
    with serve(settings) as url, httpx.Client(base_url=url, timeout=WAIT_S) as client:
        wait_ready(client)
        first = client.post("/v1/events", json=array, headers=auth)
        second = client.post("/v1/events", content=ndjson,
                             headers={**auth, "content-type": "application/x-ndjson"})
    assert first.status_code == 202 and first.json() == {"status": "accepted", "events": 3, "delivery_id": None}
    assert second.status_code == 202 and second.json()["events"] == 5

    records = consume(settings.kafka_bootstrap, settings.topic(topics.EVENTS), 8)
    landed = {CanonicalEvent.from_json_bytes(r.value).event_id: r.key for r in records}
    assert landed == {f"gen-{n}": (b"c-a" if n < 3 else b"c-b") for n in range(8)}
    raw = consume(settings.kafka_bootstrap, settings.topic(topics.RAW), 2)
    assert len(raw) == 2
    for record in raw:
        headers = dict(record.headers)
        assert headers["pulse-sender"] == b"tester"
        assert "authorization" not in headers
        assert token.encode() not in record.value + b"".join(headers.values())


# ---------------------------------------------------------------- every error answer


def test_every_error_answer(pulse_settings: Settings) -> None:
    settings = pulse_settings
    github_secret = settings.github_webhook_secret.reveal()  # type: ignore[union-attr]
    slack_secret = settings.slack_signing_secret.reveal()  # type: ignore[union-attr]
    token = settings.ingest_tokens["tester"].reveal()
    ping = next(r for r in read_path(FIXTURES / "github") if r.source.endswith("ping__1"))
    comment = next(r for r in read_path(FIXTURES / "github") if r.source.endswith("discussion_comment__1"))
    gh_headers = dict(comment.headers)

    with serve(settings) as url, httpx.Client(base_url=url, timeout=WAIT_S) as client:
        wait_ready(client)

        # 401: no signature, wrong signature, wrong secret; Slack: stale timestamp
        r = client.post("/webhooks/github", content=comment.body, headers=gh_headers)
        assert r.status_code == 401 and error_of(r)["field"] == "header.x-hub-signature-256"
        bad = signatures.sign_github("not-the-secret", comment.body)
        r = client.post("/webhooks/github", content=comment.body, headers=gh_headers | bad)
        assert r.status_code == 401 and "match" in str(error_of(r)["reason"])
        tampered = comment.body.replace(b'"created"', b'"deleted"', 1)
        good_for_original = signatures.sign_github(github_secret, comment.body)
        r = client.post("/webhooks/github", content=tampered, headers=gh_headers | good_for_original)
        assert r.status_code == 401
        slack_body = b'{"type":"event_callback","team_id":"T1","event":{"type":"message"}}'
        stale = signatures.sign_slack(slack_secret, slack_body, int(time.time()) - 3600)
        r = client.post("/webhooks/slack", content=slack_body,
                        headers={"content-type": "application/json", **stale})
        assert r.status_code == 401 and "window" in str(error_of(r)["reason"])
        assert r.headers.get("x-slack-no-retry") == "1"
        # generic API: no token, wrong token, wrong scheme
        for auth in ({}, {"authorization": "Bearer " + "x" * 32}, {"authorization": f"Basic {token}"}):
            r = client.post("/v1/events", json=[], headers=auth)
            assert r.status_code == 401 and error_of(r)["field"] == "header.authorization"
            assert r.headers["www-authenticate"].startswith("Bearer")

        # 400: malformed JSON and a body that fails validation, both correctly signed
        broken = b'{"action": "created", "comment": '
        r = client.post("/webhooks/github", content=broken,
                        headers=gh_headers | signatures.sign_github(github_secret, broken))
        assert r.status_code == 400 and error_of(r)["field"] == "body"
        no_repo = json.dumps({"action": "created", "comment": {"id": 1}}).encode()
        r = client.post("/webhooks/github", content=no_repo,
                        headers=gh_headers | signatures.sign_github(github_secret, no_repo))
        assert r.status_code == 400 and error_of(r)["field"]
        bad_event = [{"event_id": "x", "space_id": "s", "community_id": "c", "kind": "reply",
                      "actor_id": "a", "occurred_at": "yesterday"}]
        r = client.post("/v1/events", json=bad_event, headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 400 and "occurred_at" in str(error_of(r)["field"])

        # 415: wrong content type, for webhooks and the generic API
        r = client.post("/webhooks/github", content=comment.body,
                        headers=gh_headers | {"content-type": "text/plain"}
                        | signatures.sign_github(github_secret, comment.body))
        assert r.status_code == 415 and error_of(r)["field"] == "header.content-type"
        r = client.post("/v1/events", content=b"[]",
                        headers={"authorization": f"Bearer {token}", "content-type": "text/csv"})
        assert r.status_code == 415

        # 413: by Content-Length, and counted while streaming a chunked body without one
        big = b"[" + b" " * (settings.max_body_bytes + 10) + b"]"
        r = client.post("/webhooks/github", content=big, headers=gh_headers)
        assert r.status_code == 413 and error_of(r)["error"] == "body too large"

        def chunks() -> Iterator[bytes]:
            for _ in range(settings.max_body_bytes // 65536 + 2):
                yield b" " * 65536

        r = client.post("/webhooks/github", content=chunks(),
                        headers=gh_headers | {"content-type": "application/json"})
        assert "content-length" not in r.request.headers
        assert r.status_code == 413 and "exceeds" in str(error_of(r)["reason"])

        # 202 ignored: an event type we do not use; counted
        r = client.post("/webhooks/github", content=ping.body,
                        headers=dict(ping.headers) | signatures.sign_github(github_secret, ping.body))
        assert r.status_code == 202 and r.json() == {"status": "ignored", "reason": r.json()["reason"]}
        assert r.json()["reason"]

        # nothing routes to other methods or paths
        assert client.get("/webhooks/github").status_code == 405
        assert client.post("/webhooks/myspace", content=b"{}").status_code == 404

        metrics_text = client.get("/metrics").text

    def value(series: str) -> float:
        return metric_value(metrics_text, series)

    assert value('pulse_gateway_deliveries_refused_total{platform="github",reason="signature"}') == 3
    assert value('pulse_gateway_deliveries_refused_total{platform="generic",reason="unauthorized"}') == 3
    assert value('pulse_gateway_deliveries_refused_total{platform="github",reason="too_large"}') == 2
    assert value('pulse_gateway_deliveries_refused_total{platform="github",reason="media_type"}') == 1
    assert value('pulse_gateway_deliveries_ignored_total{platform="github",reason="ping"}') == 1
    assert value("pulse_gateway_requests_in_flight") == 0
    # nothing was accepted, so nothing may have reached Kafka
    assert consume(settings.kafka_bootstrap, settings.topic(topics.RAW), 0) == []


# ---------------------------------------------------------------- durable acceptance


def test_kafka_down_means_503_and_nothing_2xx_then_recovers(
    private_kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    broker = private_kafka_broker
    prefix = "down."
    create_topics(broker.bootstrap, prefix)
    settings = config.load(
        {
            "PULSE_KAFKA_BOOTSTRAP": broker.bootstrap,
            "PULSE_TOPIC_PREFIX": prefix,
            "PULSE_STATE_DIR": str(tmp_path / "state"),
            "PULSE_GITHUB_WEBHOOK_SECRET": "down-test-secret-0123456789",
            "PULSE_PRODUCE_TIMEOUT_S": "2",
        }
    )
    github = [r for r in read_path(FIXTURES / "github") if expected_events(r)]
    assert len(github) >= 2
    before, during = github[0], github[1]

    with serve(settings) as url, httpx.Client(base_url=url, timeout=WAIT_S) as client:
        wait_ready(client)
        assert send(client, settings, before).status_code == 202

        broker.stop()
        refused = [send(client, settings, during) for _ in range(3)]
        for r in refused:
            assert r.status_code == 503, r.text
            assert int(r.headers["retry-after"]) >= 1
            assert error_of(r)["error"] == "kafka unavailable"
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.headers["retry-after"]

        broker.start()
        broker.wait_ready(90)
        deadline = time.monotonic() + 60
        unavailable = len(refused)
        while (r := send(client, settings, during)).status_code != 202:
            assert r.status_code == 503, r.text  # only the documented answer while reconnecting
            unavailable += 1
            assert time.monotonic() < deadline, "gateway did not recover after Kafka restarted"
            time.sleep(0.5)
        wait_ready(client)
        metrics_text = client.get("/metrics").text

    failed = sum(
        metric_value(metrics_text, f'pulse_gateway_deliveries_failed_total{{platform="github",reason="{reason}"}}')
        for reason in ("kafka_timeout", "kafka_unavailable")
    )
    assert failed == unavailable
    assert metric_value(metrics_text, 'pulse_gateway_deliveries_accepted_total{platform="github"}') == 2
    assert metric_value(metrics_text, "pulse_gateway_produce_latency_seconds_count") == 2

    raw = consume(broker.bootstrap, settings.topic(topics.RAW), 2)
    bodies = {r.value for r in raw}
    assert before.body in bodies and during.body in bodies
    events = consume(broker.bootstrap, settings.topic(topics.EVENTS), 1)
    landed = {CanonicalEvent.from_json_bytes(r.value).event_id for r in events}
    assert {e.event_id for e in expected_events(before)} <= landed
    assert {e.event_id for e in expected_events(during)} <= landed


# ---------------------------------------------------------------- the command


@contextlib.contextmanager
def gateway(settings: Settings, tmp: Path, workers: int) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`pulse gateway --workers N` as a subprocess on a free port (its output in a pipe, read after it stops)."""
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "TMPDIR": str(tmp),  # where the gateway makes its private metrics directory
        "PULSE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "PULSE_TOPIC_PREFIX": settings.topic_prefix,
        "PULSE_STATE_DIR": str(tmp / "state"),
        "PULSE_GATEWAY_HOST": "127.0.0.1",
        "PULSE_GATEWAY_PORT": str(port),
        "PULSE_GITHUB_WEBHOOK_SECRET": settings.github_webhook_secret.reveal(),  # type: ignore[union-attr]
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "gateway", "--workers", str(workers)], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        yield process, f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@pytest.mark.parametrize("workers", [1, 2])
def test_pulse_gateway_command_serves_until_stopped(pulse_settings: Settings, tmp_path: Path, workers: int) -> None:
    settings = pulse_settings
    with gateway(settings, tmp_path, workers) as (process, url), httpx.Client(base_url=url, timeout=10) as client:
        deadline = time.monotonic() + WAIT_S
        while True:
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            with contextlib.suppress(httpx.TransportError):
                if client.get("/healthz").status_code == 200:
                    break
            assert time.monotonic() < deadline, "pulse gateway did not start"
            time.sleep(0.1)
        wait_ready(client)
        recorded = next(r for r in read_path(FIXTURES / "github") if expected_events(r))
        assert send(client, settings, recorded).status_code == 202
        assert client.get("/openapi.json").json()["openapi"].startswith("3.1")
    output = process.stdout.read().decode() if process.stdout else ""
    assert settings.github_webhook_secret.reveal() not in output  # type: ignore[union-attr]
    assert consume(settings.kafka_bootstrap, settings.topic(topics.RAW), 1)


def test_partitioner_keys_like_kafka_python_and_sticks_keyless_records(pulse_settings: Settings) -> None:
    """Events land where kafka-python's DefaultPartitioner (murmur2, as Java) puts their key; raw
    records without a key stay on one partition until a new batch is started."""
    from kafka import KafkaProducer
    from kafka.partitioner.default import DefaultPartitioner

    from pipeline.gateway.producer import _partitioner

    settings = pulse_settings
    events, raw = settings.topic(topics.EVENTS), settings.topic(topics.RAW)
    producer = KafkaProducer(bootstrap_servers=[settings.kafka_bootstrap], partitioner=_partitioner())
    try:
        producer.partitions_for(events)
        producer.partitions_for(raw)
        cluster, ours, default = producer._metadata, producer.config["partitioner"], DefaultPartitioner()
        for i in range(300):
            key = f"github:org/repo-{i}".encode()
            expected = default.partition(events, None, key, None, None, cluster)
            assert ours.partition(events, None, key, None, None, cluster) == expected
            assert ours.partition(events, None, key, None, None, cluster) == expected  # cached
        assert len({ours.partition(raw, None, None, None, None, cluster) for _ in range(50)}) == 1
    finally:
        producer.close(timeout=5)
