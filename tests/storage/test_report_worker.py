"""`pulse report` against a real running worker that holds the embedded store (and runs the sink)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from kafka import KafkaProducer
from storage_samples import event

from pipeline import config, topics

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_report_reads_through_the_worker_that_holds_the_store(pulse_settings: config.Settings, tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update(
        {
            "PULSE_KAFKA_BOOTSTRAP": pulse_settings.kafka_bootstrap,
            "PULSE_TOPIC_PREFIX": pulse_settings.topic_prefix,
            "PULSE_STATE_DIR": str(tmp_path / "state"),
            "PULSE_CLICKHOUSE_URL": f"chdb://{tmp_path / 'worker-ch'}",
            "PULSE_WORKER_HOST": "127.0.0.1",
            "PULSE_WORKER_PORT": str(port),
        }
    )
    producer = KafkaProducer(bootstrap_servers=pulse_settings.kafka_bootstrap, acks="all")
    for n in range(30):
        e = event("forum-a", n)
        producer.send(pulse_settings.topic(topics.EVENTS), key=e.community_id.encode(), value=e.to_json_bytes())
    producer.flush(30)
    producer.close(5)

    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "worker"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        url = f"http://127.0.0.1:{port}/api/communities"
        deadline = time.monotonic() + 150
        listed: object = []
        while not listed:
            assert worker.poll() is None, log_path.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")[-3000:]
            with contextlib.suppress(OSError):
                listed = get_json(url)
            time.sleep(1)
        assert isinstance(listed, list) and [r["community_id"] for r in listed] == ["forum-a"]

        # the windows of several communities in one read; unknown ones are left out
        windows = get_json(f"http://127.0.0.1:{port}/api/windows?community=forum-a&community=nobody&limit=2")
        assert isinstance(windows, dict) and list(windows) == ["forum-a"]
        hours = windows["forum-a"]
        assert 1 <= len(hours) <= 2 and all(w["window"] == "1h" for w in hours)
        assert [w["window_start"] for w in hours] == sorted(w["window_start"] for w in hours)
        with pytest.raises(urllib.error.HTTPError) as refused_query:
            get_json(f"http://127.0.0.1:{port}/api/windows?community=forum-a&window=5m")
        assert refused_query.value.code == 400
        assert "window must be 1h or 1d" in json.loads(refused_query.value.read())["error"]

        def figures(rows: object) -> list[tuple[object, ...]]:
            assert isinstance(rows, list)
            return [(r["community_id"], r["state"], r["posts_7d"]) for r in rows]

        # the worker may still be landing newer snapshots: compare with a read that did not
        # change while the report ran
        for _ in range(10):
            before = get_json(url)
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
            if figures(get_json(url)) == figures(before):
                break
            time.sleep(2)
        assert figures(json.loads(done.stdout)) == figures(before)

        # the worker holds the store: without its API the report says who holds it
        elsewhere = {**env, "PULSE_WORKER_PORT": str(free_port())}
        refused = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "report"],
            cwd=ROOT,
            env=elsewhere,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert refused.returncode == 1
        assert f"open in process {worker.pid}" in refused.stderr
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(10)
