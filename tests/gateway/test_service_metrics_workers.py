"""`pulse gateway --workers 2` as a subprocess on the real broker: one /metrics scrape counts every worker.

Each delivery goes on a new connection, so the kernel hands them to both worker processes; the
test keeps sending (bounded) until the per-process metrics files show that both workers accepted
some, then checks that every scrape, whichever worker answers it, shows the gateway's totals and
passes `promtool check metrics`. A worker killed with SIGKILL is restarted by uvicorn: its counts
stay in the totals, its "live" gauges are dropped, and the private metrics directory is gone once
the gateway stops.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from pipeline import topics
from pipeline.config import Settings
from pipeline.gateway.multiproc import DIR_PREFIX
from pipeline.replay.recorded import Recorded, read_path, route, signed_headers
from tests.gateway.test_service_gateway import gateway
from tests.observability.test_live_scrape import _check_exposition

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus) not installed"),
]

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "webhooks"
WAIT_S = 60.0  # upper bound for anything to happen; never a timing assertion
MOST_DELIVERIES = 400  # bound on sending until both workers have accepted some
ACCEPTED = "pulse_gateway_deliveries_accepted_total"


def get(url: str, path: str) -> httpx.Response:
    # a new connection each time, so that any worker may answer
    with httpx.Client(base_url=url, timeout=30, headers={"connection": "close"}) as client:
        return client.get(path)


def post(url: str, settings: Settings, recorded: Recorded) -> httpx.Response:
    headers = signed_headers(recorded, settings, time.time()) | {"connection": "close"}
    with httpx.Client(base_url=url, timeout=30) as client:
        return client.post(route(recorded), content=recorded.body, headers=headers)


def wait_until(what: str, probe: object, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + WAIT_S
    while True:
        assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
        with contextlib.suppress(httpx.TransportError):
            if probe():  # type: ignore[operator]
                return
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.1)


def metrics_dir(tmp: Path) -> Path:
    found = list(tmp.glob(DIR_PREFIX + "*"))
    assert len(found) == 1, found
    return found[0]


def accepted_by_process(directory: Path) -> dict[int, float]:
    """Deliveries accepted by each worker process, read from its own counter file."""
    counts = {}
    for path in directory.glob("counter_*.db"):
        if path.stat().st_size == 0:  # a worker starting: not sized yet (client_python#1199)
            continue
        pid = int(path.stem.split("_")[1])
        counts[pid] = sum(
            s.value for family in MultiProcessCollector.merge([str(path)]) for s in family.samples if s.name == ACCEPTED
        )
    return counts


def scraped(text: str) -> dict[str, float]:
    """Gateway series of one scrape, by name and labels; none may carry a pid label."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            assert "pid" not in s.labels, s
            out[s.name + str(sorted(s.labels.items()))] = s.value
    return out


def total(text: str, name: str) -> float:
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def test_one_scrape_counts_every_worker(pulse_settings: Settings, tmp_path: Path) -> None:
    settings = pulse_settings
    github = [r for r in read_path(FIXTURES / "github") if b'"comment"' in r.body]
    assert github
    sent = 0
    with gateway(settings, tmp_path, workers=2) as (process, url):
        wait_until("the gateway answers", lambda: get(url, "/healthz").status_code == 200, process)
        directory = metrics_dir(tmp_path)
        assert oct(directory.stat().st_mode & 0o777) == "0o700"
        wait_until("both workers wrote metrics", lambda: len(accepted_by_process(directory)) == 2, process)
        # kafka_up is the minimum over the workers (see the next test): 1 once each producer is ready
        wait_until("both workers reach Kafka",
                   lambda: get(url, "/readyz").status_code == 200
                   and total(get(url, "/metrics").text, "pulse_gateway_kafka_up") == 1, process)

        def send_until_both_accepted() -> None:
            nonlocal sent
            for _ in range(MOST_DELIVERIES):
                response = post(url, settings, github[sent % len(github)])
                assert response.status_code == 202, response.text
                sent += 1
                live = accepted_by_process(directory)
                if sent >= 20 and sum(1 for n in live.values() if n > 0) >= 2:
                    return
            raise AssertionError(f"one worker accepted everything: {accepted_by_process(directory)}")

        send_until_both_accepted()
        per_process = accepted_by_process(directory)
        assert sum(per_process.values()) == sent

        # every scrape, whichever worker answers, shows the whole gateway
        for _ in range(8):
            text = get(url, "/metrics").text
            assert total(text, ACCEPTED) == sent
            assert total(text, "pulse_gateway_deliveries_received_total") == sent
            assert total(text, "pulse_gateway_produce_latency_seconds_count") == sent
            assert total(text, "pulse_gateway_requests_in_flight") == 0
            scraped(text)
        _check_exposition(text, "gateway --workers 2")

        # a worker killed outright: uvicorn starts another; its counts stay, its live gauges go
        victim = max(per_process, key=lambda pid: per_process[pid])
        live_gauges = list(directory.glob(f"gauge_live*_{victim}.db"))
        assert live_gauges
        os.kill(victim, signal.SIGKILL)
        wait_until("uvicorn replaced the killed worker", lambda: len(accepted_by_process(directory)) == 3, process)
        wait_until("the killed worker's live gauges were dropped",
                   lambda: not any(p.exists() for p in live_gauges), process)
        assert (directory / f"counter_{victim}.db").exists()
        # the new worker checks Kafka on its own: kafka_up, the minimum, is 1 again once it connected
        wait_until("the new worker reports Kafka up",
                   lambda: total(get(url, "/metrics").text, "pulse_gateway_kafka_up") == 1, process)

        before = sent
        for i in range(10):
            response = post(url, settings, github[i % len(github)])
            assert response.status_code == 202, response.text
            sent += 1
        for _ in range(4):
            text = get(url, "/metrics").text
            assert total(text, ACCEPTED) == sent > before
            assert total(text, "pulse_gateway_requests_in_flight") == 0
        _check_exposition(text, "gateway --workers 2 after a restart")
    assert process.returncode is not None
    assert not list(tmp_path.glob(DIR_PREFIX + "*")), "the metrics directory outlived the gateway"
    assert settings.github_webhook_secret.reveal() not in (  # type: ignore[union-attr]
        process.stdout.read().decode() if process.stdout else ""
    )
    # every accepted delivery was stored
    from tests.gateway.test_service_gateway import consume

    assert len(consume(settings.kafka_bootstrap, settings.topic(topics.RAW), sent)) == sent


def test_kafka_up_is_merged_as_the_minimum_and_kept_current_without_requests(
    pulse_settings: Settings, tmp_path: Path
) -> None:
    """Each worker writes kafka_up as a "livemin" gauge and re-checks Kafka on its own: with no
    delivery and no /readyz at all, scrapes alone see it reach 1 (every worker connected)."""
    settings = pulse_settings
    with gateway(settings, tmp_path, workers=2) as (process, url):
        wait_until("the gateway answers", lambda: get(url, "/healthz").status_code == 200, process)
        directory = metrics_dir(tmp_path)
        wait_until("both workers wrote metrics", lambda: len(list(directory.glob("gauge_livemin_*.db"))) == 2,
                   process)
        wait_until("kafka_up is 1", lambda: total(get(url, "/metrics").text, "pulse_gateway_kafka_up") == 1, process)
        per_worker = [
            s.value for path in directory.glob("gauge_livemin_*.db")
            for family in MultiProcessCollector.merge([str(path)]) for s in family.samples
        ]
        assert per_worker == [1.0, 1.0]
        text = get(url, "/metrics").text
        assert [s.labels for f in text_string_to_metric_families(text) for s in f.samples
                if s.name == "pulse_gateway_kafka_up"] == [{}]
        assert total(text, "pulse_gateway_deliveries_received_total") == 0


def test_one_process_keeps_kafka_up_current_without_requests(pulse_settings: Settings, tmp_path: Path) -> None:
    """One gateway process with no delivery and no /readyz: kafka_up still reaches 1 (a stale 0
    would fire PulseKafkaUnreachable on a quiet gateway)."""
    with gateway(pulse_settings, tmp_path, workers=1) as (process, url):
        wait_until("the gateway answers", lambda: get(url, "/healthz").status_code == 200, process)
        wait_until("kafka_up is 1", lambda: total(get(url, "/metrics").text, "pulse_gateway_kafka_up") == 1, process)
        assert total(get(url, "/metrics").text, "pulse_gateway_deliveries_received_total") == 0
