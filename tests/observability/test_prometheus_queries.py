"""Every PromQL expression we ship, run on the real Prometheus (Debian /usr/bin/prometheus).

One Prometheus per module, on 127.0.0.1 and a free port, stopped by pid. First it answers
every query on an empty TSDB (a parse error fails the test); then it scrapes expositions
generated from pipeline.metrics' gateway and worker registries (served on 127.0.0.1), so we
can check that every metric a query names is really exported, that the rule files load and
evaluate without error, and that a flagged community puts its alert in pending state.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from prometheus_client import CollectorRegistry, start_http_server

from pipeline.dashboards.queries import metric_names_in, shipped_queries
from pipeline.metrics import FAIL_REASONS, GatewayMetrics, WorkerMetrics, all_metric_names
from pipeline.results import HealthSnapshot
from pipeline.stack.process import free_port
from pipeline.stack.prometheus import PrometheusServer, prometheus_binary

pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.skipif(prometheus_binary() is None, reason="Debian prometheus not installed"),
]

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules"
T = TypeVar("T")


QUERIES = shipped_queries()


def _get(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:  # 400 bad_data carries the parse error in its body
        body = exc.read()
    result: dict[str, Any] = json.loads(body)
    return result


def _query(base: str, expr: str) -> dict[str, Any]:
    return _get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))


def _wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.5)


# ---------------------------------------------------------------- exported metrics, populated


def _snapshot(cid: str, flags: list[str], state: str) -> HealthSnapshot:
    now = datetime.now(UTC)
    return HealthSnapshot.model_validate(
        {
            "community_id": cid,
            "platform": "discourse",
            "space_id": "forum.example",
            "community_type": "open",
            "state": state,
            "flags": flags,
            "responsiveness": "when_we_can",
            "stream_time": now,
            "evaluated_at": now,
            "posts_7d": 12,
            "first_response_p50_7d_s": 4000.0,
            "answered_within_sla_7d": 0.5,
            "unanswered_threads": 3,
            "oldest_unanswered_age_s": 90000.0,
            "last_post_at": now - timedelta(hours=2),
        }
    )


def populated_registries() -> tuple[CollectorRegistry, CollectorRegistry]:
    """Every metric with at least one series, the way a busy gateway and worker would show them."""
    gateway, worker = CollectorRegistry(), CollectorRegistry()
    g = GatewayMetrics(gateway)
    g.deliveries_received.labels(platform="github").inc(10)
    g.deliveries_accepted.labels(platform="github").inc(8)
    g.deliveries_refused.labels(platform="github", reason="signature").inc()
    g.deliveries_failed.labels(platform="github", reason=FAIL_REASONS[0]).inc()
    g.deliveries_ignored.labels(platform="github", reason="ping").inc()
    g.events_produced.labels(platform="github", kind="reply").inc(8)
    g.produce_latency.observe(0.004)
    g.requests_in_flight.set(0)
    g.kafka_up.set(1)
    w = WorkerMetrics(worker, max_communities=10)
    w.events_processed.inc(100)
    w.duplicates.inc(2)
    w.late_events.labels(outcome="applied").inc()
    w.dead_letters.labels(reason="decode").inc()
    w.consumer_lag.labels(topic="engagement.events", partition="0").set(5)
    w.stream_lag.set(1.5)
    w.kafka_up.set(1)
    w.sink.batches.labels(table="windows").inc()
    w.sink.rows.labels(table="windows").inc(50)
    w.sink.batch_duration.observe(0.05)
    w.communities.update(
        [_snapshot("flagged-cat", ["dying", "when_we_can"], "dying"), _snapshot("calm-cat", [], "healthy")]
    )
    return gateway, worker


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    gateway, worker = populated_registries()
    g_port, w_port = free_port(), free_port()
    g_server, _ = start_http_server(g_port, addr="127.0.0.1", registry=gateway)
    w_server, _ = start_http_server(w_port, addr="127.0.0.1", registry=worker)
    root = tmp_path_factory.mktemp("prometheus")
    config = root / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(p) for p in sorted(RULES.glob("*.yml"))],
                "scrape_configs": [
                    {"job_name": "gateway", "static_configs": [{"targets": [f"127.0.0.1:{g_port}"]}]},
                    {"job_name": "worker", "static_configs": [{"targets": [f"127.0.0.1:{w_port}"]}]},
                ],
            }
        )
    )
    server = PrometheusServer(config, root / "data", free_port(), die_with_parent=True, stop_timeout=10)
    try:
        server.start()
        server.wait_ready(timeout=60)
        yield server.url
    finally:
        server.stop()
        g_server.shutdown()
        w_server.shutdown()


# ---------------------------------------------------------------- the tests


def test_queries_were_found() -> None:
    wheres = [where for where, _ in QUERIES]
    for source in ("Overview", "Community / ", "Pipeline health", "community.yml", "pipeline.yml", "alerting/"):
        assert any(source in w for w in wheres), source
    assert len(QUERIES) > 50


def test_every_query_parses_and_runs(prometheus: str) -> None:
    # Runs first in this module: the TSDB is still empty or nearly so; parsing does not need data.
    failures = []
    for where, expr in QUERIES:
        answer = _query(prometheus, expr)
        if answer.get("status") != "success":
            failures.append(f"{where}: {answer.get('errorType')}: {answer.get('error')}\n    {expr}")
    assert not failures, "\n".join(failures)


def test_every_query_names_only_metrics_the_services_export(prometheus: str) -> None:
    def scraped() -> set[str] | None:
        answer = _query(prometheus, 'count by (__name__) ({__name__=~"pulse_.+"})')
        names = {r["metric"]["__name__"] for r in answer["data"]["result"]}
        # both targets scraped at least once
        return names if {"pulse_gateway_kafka_up", "pulse_worker_kafka_up"} <= names else None

    exported = _wait_for("both targets scraped", scraped)
    assert exported <= all_metric_names(), exported - all_metric_names()
    unknown = []
    for where, expr in QUERIES:
        for name in metric_names_in(expr) - exported:
            unknown.append(f"{where}: {name} is not in any scrape")
    assert not unknown, "\n".join(unknown)


def test_rule_files_load_and_evaluate_without_errors(prometheus: str) -> None:
    groups = [g for p in RULES.glob("*.yml") for g in yaml.safe_load(p.read_text())["groups"]]
    expected = {r["alert"] for g in groups for r in g["rules"]}

    def evaluated() -> list[dict[str, Any]] | None:
        groups = _get(f"{prometheus}/api/v1/rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        done = all(not r.get("lastEvaluation", "").startswith("0001") for r in rules)
        return rules if rules and done else None

    rules = _wait_for("every rule evaluated", evaluated)
    assert {r["name"] for r in rules} == expected
    broken = [f"{r['name']}: {r.get('lastError')}" for r in rules if r["health"] != "ok"]
    assert not broken, broken


def test_flagged_community_alerts_are_pending_and_calm_one_is_not(prometheus: str) -> None:
    def pending() -> list[dict[str, Any]] | None:
        alerts = _get(f"{prometheus}/api/v1/alerts")["data"]["alerts"]
        mine = [a for a in alerts if a["labels"]["alertname"] in ("PulseCommunityDying", "PulseCommunityWhenWeCan")]
        return mine if len(mine) == 2 else None

    alerts = _wait_for("community alerts pending", pending)
    assert {a["labels"]["alertname"] for a in alerts} == {"PulseCommunityDying", "PulseCommunityWhenWeCan"}
    assert {a["labels"]["community_id"] for a in alerts} == {"flagged-cat"}
    assert all(a["state"] == "pending" for a in alerts)  # their for-durations have not passed
    every = _get(f"{prometheus}/api/v1/alerts")["data"]["alerts"]
    assert not any(a["labels"].get("community_id") == "calm-cat" for a in every)
    # The failed delivery counted once is not a sustained rate: no gateway alert yet either way,
    # but Kafka is up on both sides, so PulseKafkaUnreachable must not even be pending.
    assert not any(a["labels"]["alertname"] == "PulseKafkaUnreachable" for a in every)
