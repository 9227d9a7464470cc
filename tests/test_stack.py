"""`pulse stack up | status | down` as a user runs them, and the stack's clear errors.

Real processes only: the commands run as subprocesses with their own PULSE_STATE_DIR and
free ports; afterwards every pid they started must be gone.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from pipeline.stack.command import Record, local_kafka_port, render_prometheus_config
from pipeline.stack.kafka import KafkaBroker, server_properties
from pipeline.stack.process import StackError, free_port, pid_alive, pid_cmdline, pid_matches, terminate
from pipeline.stack.prometheus import prometheus_binary

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "deploy" / "prometheus" / "prometheus.yml"


# ---------------------------------------------------------------- pure parts


def test_broker_config_listens_on_loopback_only(tmp_path: Path) -> None:
    props = dict(line.split("=", 1) for line in server_properties(tmp_path, 19092, 19093).splitlines() if line)
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor"):
        assert props[key] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["log.dirs"] == str(tmp_path / "logs")


def test_cluster_ids_are_kafka_uuids_the_storage_tool_accepts() -> None:
    import base64

    from pipeline.stack.kafka import cluster_id

    ids = {cluster_id() for _ in range(2000)}  # ~31 would start with '-' if unguarded
    assert len(ids) == 2000
    for value in ids:
        assert len(value) == 22 and not value.startswith("-")
        assert len(base64.urlsafe_b64decode(value + "==")) == 16


@given(st.integers(1, 65535), st.integers(1, 65535))
def test_prometheus_config_targets_follow_the_settings(gateway_port: int, worker_port: int) -> None:
    rendered = yaml.safe_load(
        render_prometheus_config(TEMPLATE.read_text(), gateway_port, worker_port, Path("/x/rules"))
    )
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in rendered["scrape_configs"]}
    assert targets == {"gateway": [f"127.0.0.1:{gateway_port}"], "worker": [f"127.0.0.1:{worker_port}"]}
    assert rendered["rule_files"] == ["/x/rules/*.yml"]


def test_kafka_port_must_be_local() -> None:
    assert local_kafka_port("127.0.0.1:9092,127.0.0.1:9093") == 9092
    assert local_kafka_port("localhost:29092") == 29092
    with pytest.raises(StackError, match=r"127\.0\.0\.1 only"):
        local_kafka_port("kafka:9092")


@given(
    st.sampled_from(["kafka", "prometheus"]),
    st.integers(1, 2**22),
    st.integers(1, 65535),
    st.text(min_size=1),
    st.dictionaries(st.sampled_from(["data_dir", "controller_port"]), st.text() | st.integers()),
)
def test_pid_record_round_trips(name: str, pid: int, port: int, marker: str, extra: dict[str, object]) -> None:
    record = Record(name, pid, port, marker, "/tmp/x.log", extra)
    assert Record.from_json(record.to_json()) == record


# ---------------------------------------------------------------- clear errors


def test_missing_java_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    broker = KafkaBroker(tmp_path / "kafka", free_port(), free_port())
    with pytest.raises(StackError, match="`java` was not found"):
        broker.start()
    assert broker.pid is None


def test_missing_maven_is_named_when_jars_are_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.stack.kafka import ensure_jars

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(StackError, match="`mvn` was not found"):
        ensure_jars()


@pytest.mark.kafka
def test_broker_that_dies_at_start_reports_its_log(tmp_path: Path) -> None:
    broker = KafkaBroker(
        tmp_path / "kafka", free_port(), free_port(), jvm_options=["-XX:+NoSuchJvmOption"], die_with_parent=True
    )
    # format with working options first, so the failure is the broker's own start
    KafkaBroker(tmp_path / "kafka", broker.port, broker.controller_port).format()
    try:
        broker.start()
        with pytest.raises(StackError, match="exited during start-up") as info:
            broker.wait_ready(30)
        assert "NoSuchJvmOption" in str(info.value)  # the tail of the log explains why
    finally:
        broker.stop()


@pytest.mark.kafka
def test_broker_dies_with_a_killed_parent(tmp_path: Path) -> None:
    """What keeps an interrupted or killed test run from leaving a broker behind."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from pipeline.stack.kafka import KafkaBroker
        from pipeline.stack.process import free_port
        broker = KafkaBroker(Path({str(tmp_path / "kafka")!r}), free_port(), free_port(), die_with_parent=True)
        broker.start()
        print(broker.pid, flush=True)
        time.sleep(120)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert parent.stdout is not None
        broker_pid = int(parent.stdout.readline())
        # setpriv sets the parent-death signal, then execs java: wait for the exec
        deadline = time.monotonic() + 30
        while "java" not in pid_cmdline(broker_pid).split(" ")[0] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pid_matches(broker_pid, str(tmp_path / "kafka" / "server.properties"))
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 30
        while pid_alive(broker_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        survived = pid_matches(broker_pid, str(tmp_path / "kafka" / "server.properties"))
        if survived:
            terminate(broker_pid, 5)
        assert not survived
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=10)


# ---------------------------------------------------------------- the command


def _pulse(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "stack", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def stack_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update(
        PULSE_STATE_DIR=str(tmp_path / "state"),
        PULSE_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
        PULSE_PROMETHEUS_PORT=str(free_port()),
        PULSE_GATEWAY_PORT=str(free_port()),
        PULSE_WORKER_PORT=str(free_port()),
        PULSE_TOPIC_PREFIX="stacktest.",
        PULSE_LOG_LEVEL="WARNING",
    )
    yield env
    # whatever a failing test left running is stopped by the pid `up` recorded
    for path in (tmp_path / "state" / "stack").glob("*.json"):
        record = Record.from_json(path.read_text())
        if pid_matches(record.pid, record.marker):
            terminate(record.pid, 15)


def _records(env: dict[str, str]) -> dict[str, Record]:
    stack_dir = Path(env["PULSE_STATE_DIR"]) / "stack"
    return {p.stem: Record.from_json(p.read_text()) for p in stack_dir.glob("*.json")}


def test_up_refuses_a_port_in_use(stack_env: dict[str, str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        stack_env["PULSE_KAFKA_BOOTSTRAP"] = f"127.0.0.1:{port}"
        result = _pulse(stack_env, "up")
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert _records(stack_env) == {}


def test_up_refuses_a_remote_bootstrap(stack_env: dict[str, str]) -> None:
    stack_env["PULSE_KAFKA_BOOTSTRAP"] = "kafka.example:9092"
    result = _pulse(stack_env, "up")
    assert result.returncode == 1
    assert "127.0.0.1 only" in result.stderr


def test_topics_reports_an_unreachable_kafka(stack_env: dict[str, str]) -> None:
    result = _pulse(stack_env, "topics", "--timeout", "1")
    assert result.returncode == 1
    assert f"Kafka at {stack_env['PULSE_KAFKA_BOOTSTRAP']} did not answer" in result.stderr


@pytest.mark.kafka
@pytest.mark.slow
def test_up_status_down_leaves_nothing_behind(stack_env: dict[str, str]) -> None:
    with_prometheus = prometheus_binary() is not None
    prometheus_port = int(stack_env["PULSE_PROMETHEUS_PORT"])

    # first `up` with Prometheus's port taken: Kafka comes up, Prometheus fails clearly
    if with_prometheus:
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", prometheus_port))
            busy.listen()
            failed = _pulse(stack_env, "up")
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert f"port {prometheus_port} on 127.0.0.1 is already in use" in failed.stderr
        assert set(_records(stack_env)) == {"kafka"}

    up = _pulse(stack_env, "up")
    assert up.returncode == 0, up.stdout + up.stderr
    records = _records(stack_env)
    assert set(records) == ({"kafka", "prometheus"} if with_prometheus else {"kafka"})
    if not with_prometheus:
        assert "Prometheus skipped" in up.stdout
    for record in records.values():
        assert pid_matches(record.pid, record.marker)

    from kafka.admin import KafkaAdminClient

    from pipeline.topics import topic_names

    admin = KafkaAdminClient(bootstrap_servers=stack_env["PULSE_KAFKA_BOOTSTRAP"])
    try:
        assert set(topic_names("stacktest.")) <= set(admin.list_topics())
    finally:
        admin.close()

    # a second `up` pointed at another port refuses instead of starting a second broker
    moved = _pulse({**stack_env, "PULSE_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}, "up", "--no-prometheus")
    assert moved.returncode == 1
    assert "run `pulse stack down` first" in moved.stderr
    assert _records(stack_env) == records

    # `topics` alone works against any reachable broker, here the one `up` started
    topics = _pulse({**stack_env, "PULSE_TOPIC_PREFIX": "other."}, "topics")
    assert topics.returncode == 0, topics.stdout + topics.stderr
    admin = KafkaAdminClient(bootstrap_servers=stack_env["PULSE_KAFKA_BOOTSTRAP"])
    try:
        assert set(topic_names("other.")) <= set(admin.list_topics())
    finally:
        admin.close()

    status = _pulse(stack_env, "status", "--json")
    assert status.returncode == 0, status.stderr
    rows = {row["name"]: row for row in json.loads(status.stdout)}
    for name, record in records.items():
        assert rows[name]["pid"] == record.pid
        assert rows[name]["running"] and rows[name]["listening"]
        assert rows[name]["address"] == f"127.0.0.1:{record.port}"

    down = _pulse(stack_env, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    for record in records.values():
        assert not pid_alive(record.pid), f"{record.name} pid {record.pid} still running"
    assert _records(stack_env) == {}
    assert _pulse(stack_env, "status").returncode == 3
    assert "nothing to stop" in _pulse(stack_env, "down").stdout


# ---------------------------------------------------------------- Prometheus alone


def test_missing_prometheus_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.stack.prometheus import PrometheusServer

    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    server = PrometheusServer(TEMPLATE, tmp_path / "prom", free_port())
    with pytest.raises(StackError, match="apt-get install prometheus"):
        server.start()


@pytest.mark.prometheus
def test_prometheus_server_scrapes_itself_and_stops(tmp_path: Path) -> None:
    import urllib.parse
    import urllib.request

    from pipeline.stack.prometheus import PrometheusServer

    if prometheus_binary() is None:
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    port = free_port()
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s"},
                "scrape_configs": [{"job_name": "self", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}],
            }
        )
    )
    server = PrometheusServer(config_file, tmp_path / "data", port, die_with_parent=True)
    server.start()
    try:
        server.wait_ready(30)
        pid = server.pid
        assert pid is not None and pid_matches(pid, str(config_file))
        query = urllib.parse.urlencode({"query": 'up{job="self"}'})
        deadline = time.monotonic() + 30
        result: list[object] = []
        while not result and time.monotonic() < deadline:
            with urllib.request.urlopen(f"{server.url}/api/v1/query?{query}", timeout=5) as response:
                result = json.load(response)["data"]["result"]
            time.sleep(0.5)
        assert result, "Prometheus never scraped itself"
    finally:
        server.stop()
    assert not pid_alive(pid)
