"""Live services: `pulse gateway` and `pulse worker` as subprocesses, scraped as they run.

A real Prometheus scrapes both, with our rule files (for-durations set to 0s so a scenario
fires in seconds). The gateway receives a scenario through the generic API (a one-poster
community nobody answers, a lively one) plus deliveries with a wrong token; the worker
consumes the events from the session's real broker. Their /metrics pass `promtool check
metrics` and contain only names pipeline.metrics defines; the one-poster, "when we can" and
gateway-refusing alerts fire for the right labels only; every shipped query runs on the data.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from pipeline.config import Settings
from pipeline.dashboards.queries import metric_names_in, shipped_queries
from pipeline.events import CanonicalEvent, stable_event_id
from pipeline.metrics import all_metric_names
from pipeline.stack.process import free_port
from pipeline.stack.prometheus import PrometheusServer, prometheus_binary
from tests.conftest import TEST_SECRETS

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.prometheus,
    pytest.mark.slow,
    pytest.mark.skipif(
        prometheus_binary() is None or shutil.which("promtool") is None, reason="Debian prometheus not installed"
    ),
]

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules"
WAIT_S = 90.0  # upper bound for start-up and for data to show up; never a timing assertion
T = TypeVar("T")
QUERIES = shipped_queries()


def _wait_for(what: str, probe: Callable[[], T | None], timeout: float = WAIT_S) -> T:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError):
            value = probe()
            if value:
                return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.5)


class Service:
    def __init__(self, name: str, args: list[str], env: dict[str, str], port: int, log: Path) -> None:
        self.name, self.port, self.log = name, port, log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pipeline.cli", *args], env=env, stdout=out, stderr=subprocess.STDOUT
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def scrape(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=5).text

    def wait_healthy(self) -> None:
        def probe() -> bool:
            assert self.process.poll() is None, f"{self.name} exited:\n{self.log.read_text(errors='replace')[-3000:]}"
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200

        _wait_for(f"{self.name} healthy", probe)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@pytest.fixture
def services(pulse_settings: Settings, tmp_path: Path) -> Iterator[tuple[Service, Service]]:
    env = {
        "PATH": "/usr/bin:/bin",
        "PULSE_KAFKA_BOOTSTRAP": pulse_settings.kafka_bootstrap,
        "PULSE_TOPIC_PREFIX": pulse_settings.topic_prefix,
        "PULSE_CLICKHOUSE_URL": f"chdb://{tmp_path / 'ch'}",
        "PULSE_LOG_LEVEL": "INFO",
        **TEST_SECRETS,
    }
    g_port, w_port = free_port(), free_port()
    gateway = Service(
        "gateway",
        ["gateway"],
        {**env, "PULSE_STATE_DIR": str(tmp_path / "g"), "PULSE_GATEWAY_PORT": str(g_port)},
        g_port,
        tmp_path / "gateway.log",
    )
    worker = Service(
        "worker",
        ["worker", "--no-sink"],
        {**env, "PULSE_STATE_DIR": str(tmp_path / "w"), "PULSE_WORKER_PORT": str(w_port)},
        w_port,
        tmp_path / "worker.log",
    )
    try:
        gateway.wait_healthy()
        worker.wait_healthy()
        yield gateway, worker
    finally:
        gateway.stop()
        worker.stop()


def _event(i: int, community: str, kind: str, actor: str, thread: str, minutes_ago: int) -> dict[str, Any]:
    event = CanonicalEvent.model_validate(
        {
            "event_id": stable_event_id("obs", community, i),
            "platform": "generic",
            "space_id": "observability-test",
            "community_id": community,
            "kind": kind,
            "actor_id": actor,
            "actor_type": "human",
            "thread_id": thread,
            "occurred_at": datetime.now(UTC) - timedelta(minutes=minutes_ago),
        }
    )
    return dict(json.loads(event.to_json_bytes()))


def scenario_events() -> list[dict[str, Any]]:
    """`obs-solo`: one person posts everything (one-poster, nobody answers); `obs-lively`: a
    conversation between four people, every thread answered within minutes; `obs-dying`:
    answered threads every day for four weeks (16 posts a week), then 4 posts in the last week."""
    solo = [_event(i, "obs-solo", "thread_started", "solo-1", f"s-{i}", 60 - i) for i in range(12)]
    lively = []
    for t in range(4):
        lively.append(_event(100 + t, "obs-lively", "thread_started", f"user-{t}", f"l-{t}", 50 - t))
        for r in range(3):
            responder = f"user-{(t + r + 1) % 4}"
            lively.append(_event(200 + 10 * t + r, "obs-lively", "reply", responder, f"l-{t}", 45 - t - r))
    # `obs-dying`: four weeks of 8 answered threads a week, then a week with only 2
    dying = []
    baseline_days = [d for week in range(1, 5) for d in (7 * week + 2 + k for k in range(7))]  # days 9..36 ago
    last_week_days = [1, 4]
    for n, days_ago in enumerate(sorted(baseline_days + last_week_days, reverse=True)):
        start = days_ago * 24 * 60
        dying.append(_event(1000 + 2 * n, "obs-dying", "thread_started", f"d-{n % 5}", f"d-{n}", start))
        dying.append(_event(1001 + 2 * n, "obs-dying", "reply", f"d-{(n + 1) % 5}", f"d-{n}", start - 10))
    return solo + lively + dying


def immediate_rules(out_dir: Path) -> list[Path]:
    """Our rule files with every for-duration set to 0s, so a scenario fires in seconds."""
    written = []
    for path in sorted(RULES.glob("*.yml")):
        doc = yaml.safe_load(path.read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    rule["for"] = "0s"
        target = out_dir / path.name
        target.write_text(yaml.safe_dump(doc, sort_keys=False))
        written.append(target)
    return written


def _check_exposition(text: str, service: str) -> set[str]:
    done = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    assert done.returncode == 0, f"{service}: {done.stdout.decode()}{done.stderr.decode()}"
    names = {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}
    pulse = {n for n in names if n.startswith("pulse_")}
    assert pulse <= all_metric_names(), (
        f"{service} exports names pipeline.metrics does not define: {pulse - all_metric_names()}"
    )
    return pulse


def test_live_gateway_and_worker_metrics_and_alerts(services: tuple[Service, Service], tmp_path: Path) -> None:
    gateway, worker = services
    token = TEST_SECRETS["PULSE_INGEST_TOKENS"].split("=", 1)[1]

    # a real Prometheus scrapes both live services, with our rules made immediate
    root = tmp_path / "prometheus"
    (root / "rules").mkdir(parents=True)
    config = root / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(p) for p in immediate_rules(root / "rules")],
                "scrape_configs": [
                    {"job_name": "gateway", "static_configs": [{"targets": [f"127.0.0.1:{gateway.port}"]}]},
                    {"job_name": "worker", "static_configs": [{"targets": [f"127.0.0.1:{worker.port}"]}]},
                ],
            }
        )
    )
    server = PrometheusServer(config, root / "data", free_port(), die_with_parent=True, stop_timeout=10)
    try:
        server.start()
        server.wait_ready(timeout=60)

        def query(expr: str) -> list[dict[str, Any]]:
            response = httpx.get(f"{server.url}/api/v1/query", params={"query": expr}, timeout=10).json()
            assert response["status"] == "success", response
            return list(response["data"]["result"])

        # rate() needs the counters to rise between scrapes: send only once both are scraped
        _wait_for("both targets scraped", lambda: len(query("up == 1")) == 2)
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            _wait_for("gateway ready", lambda: client.get("/readyz").status_code == 200)
            answer = client.post("/v1/events", json=scenario_events(), headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 202, answer.text
            for _ in range(3):  # a sender with a wrong token: 3 of 4 deliveries refused
                assert client.post("/v1/events", json=[], headers={"Authorization": "Bearer wrong"}).status_code == 401

        # the gateway's scrape shows what happened, and is valid
        g_text = gateway.scrape()
        g_names = _check_exposition(g_text, "gateway")
        assert "pulse_gateway_deliveries_accepted_total" in g_names
        assert 'pulse_gateway_deliveries_refused_total{platform="generic",reason="unauthorized"} 3.0' in g_text

        # the worker processes the events and exports both communities
        def worker_saw_them() -> str | None:
            text = worker.scrape()
            flagged = 'pulse_community_flag{community_id="obs-solo",flag="one_poster",platform="generic"} 1.0'
            dying = 'pulse_community_state{community_id="obs-dying",platform="generic",state="dying"} 1.0'
            return text if flagged in text and dying in text and 'community_id="obs-lively"' in text else None

        w_text = _wait_for("worker to flag obs-solo", worker_saw_them)
        w_names = _check_exposition(w_text, "worker")
        assert {"pulse_communities", "pulse_community_state", "pulse_community_flag"} <= w_names

        # alerts: the one-poster community fires, the lively one does not; the refusals fire
        def firing() -> dict[str, list[dict[str, str]]] | None:
            alerts = httpx.get(f"{server.url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
            by_name: dict[str, list[dict[str, str]]] = {}
            for alert in alerts:
                if alert["state"] == "firing":
                    by_name.setdefault(alert["labels"]["alertname"], []).append(alert["labels"])
            wanted = {
                "PulseCommunityOnePoster",
                "PulseCommunityWhenWeCan",
                "PulseCommunityDying",
                "PulseGatewayRefusingDeliveries",
            }
            return by_name if wanted <= set(by_name) else None

        alerts = _wait_for("alerts to fire", firing)
        assert [a["community_id"] for a in alerts["PulseCommunityOnePoster"]] == ["obs-solo"]
        assert [a["community_id"] for a in alerts["PulseCommunityWhenWeCan"]] == ["obs-solo"]  # nobody answers
        assert [a["platform"] for a in alerts["PulseGatewayRefusingDeliveries"]] == ["generic"]
        assert [a["community_id"] for a in alerts["PulseCommunityDying"]] == ["obs-dying"]
        assert "PulseCommunityDead" not in alerts, alerts["PulseCommunityDead"]
        assert not any(a.get("community_id") == "obs-lively" for labels in alerts.values() for a in labels)
        # the worker counts communities by state across everything it knows
        assert float(query("sum(pulse_communities)")[0]["value"][1]) == 3

        # every shipped query runs against the live data
        for _, expr in QUERIES:
            query(expr)
        scraped = {r["metric"]["__name__"] for r in query('count by (__name__) ({__name__=~"pulse_.+"})')}
        # names the dashboards and rules use that the live services do not export yet (informative)
        missing = sorted({n for _, e in QUERIES for n in metric_names_in(e)} - scraped)
        print("metrics named by queries but absent from the live scrapes:", missing)
        print("kafka_up:", [(r["metric"]["job"], r["value"][1]) for r in query('{__name__=~"pulse_.*kafka_up"}')])
        print("firing:", {name: len(v) for name, v in alerts.items()})
    finally:
        server.stop()
