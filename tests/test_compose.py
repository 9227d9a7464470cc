"""docker-compose.yml holds together: services, ports, scrape targets, mounts and settings.

Docker is not needed: the file is read as data and checked against the code's own facts
(pipeline.config.VARIABLES, the Prometheus configs, the Dockerfile, Grafana provisioning).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from pipeline import config
from pipeline.stack.kafka import kafka_version

REPO = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
_PLACEHOLDER = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}")


def _resolve(value: object) -> str:
    """Compose interpolation: ${X:-default} -> default, ${X:?error} -> a sample value."""

    def one(match: re.Match[str]) -> str:
        if match["op"] == ":-":
            return match["arg"]
        return "sample-value-for-" + match["name"].lower()

    return _PLACEHOLDER.sub(one, str(value))


def _env(service: str) -> dict[str, str]:
    return {k: _resolve(v) for k, v in (SERVICES[service].get("environment") or {}).items()}


def _ports(service: str) -> list[tuple[str, int, int]]:
    result = []
    for mapping in SERVICES[service].get("ports", []):
        ip, host, container = str(mapping).split(":")
        result.append((ip, int(host), int(container)))
    return result


def _scrape_targets(path: Path) -> dict[str, list[str]]:
    prom = yaml.safe_load(path.read_text())
    return {
        job["job_name"]: [t for static in job["static_configs"] for t in static["targets"]]
        for job in prom["scrape_configs"]
    }


def test_every_part_of_the_pipeline_is_a_service() -> None:
    assert {"kafka", "clickhouse", "prometheus", "grafana", "gateway", "worker"} <= set(SERVICES)
    for name, service in SERVICES.items():
        for dependency in service.get("depends_on") or []:
            assert dependency in SERVICES, f"{name} depends on unknown service {dependency}"


def test_host_ports_are_published_on_loopback_only() -> None:
    published = [(name, mapping) for name in SERVICES for mapping in SERVICES[name].get("ports", [])]
    assert published
    for name, mapping in published:
        assert str(mapping).startswith("127.0.0.1:"), f"{name} publishes {mapping!r} beyond 127.0.0.1"


@pytest.mark.parametrize("service", ["gateway", "worker"])
def test_pulse_services_listen_where_they_are_published(service: str) -> None:
    env = _env(service)
    port = int(env[f"PULSE_{service.upper()}_PORT"])
    assert env[f"PULSE_{service.upper()}_HOST"] == "0.0.0.0"  # inside its container network
    assert ("127.0.0.1", port, port) in _ports(service)
    assert SERVICES[service]["command"] == [service]


def test_prometheus_scrapes_the_compose_services() -> None:
    prometheus = SERVICES["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    config_flag = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    compose_config = PROMETHEUS_DIR / Path(config_flag.split("=", 1)[1]).relative_to("/etc/prometheus")
    targets = _scrape_targets(compose_config)
    assert targets == {
        "gateway": [f"gateway:{_env('gateway')['PULSE_GATEWAY_PORT']}"],
        "worker": [f"worker:{_env('worker')['PULSE_WORKER_PORT']}"],
    }
    # the local config has the same jobs and rules, on 127.0.0.1 with the default ports
    local = _scrape_targets(PROMETHEUS_DIR / "prometheus.yml")
    defaults = {v.name: v.default for v in config.VARIABLES}
    assert local == {
        "gateway": [f"127.0.0.1:{defaults['gateway_port']}"],
        "worker": [f"127.0.0.1:{defaults['worker_port']}"],
    }
    rules = {
        p.name: yaml.safe_load(p.read_text())["rule_files"] for p in (compose_config, PROMETHEUS_DIR / "prometheus.yml")
    }
    assert len({tuple(r) for r in rules.values()}) == 1, rules


def test_every_pulse_variable_is_a_known_setting_and_loads() -> None:
    known = {v.env for v in config.VARIABLES}
    for name, service in SERVICES.items():
        env = service.get("environment") or {}
        unknown = sorted(k for k in env if k.startswith("PULSE_") and k not in known)
        assert not unknown, f"{name} sets unknown settings {unknown}"
        if any(k.startswith("PULSE_") for k in env):
            config.load(_env(name))  # raises ConfigError naming a value the code rejects


def test_pulse_services_reach_kafka_and_clickhouse_by_service_name() -> None:
    kafka_env = _env("kafka")
    for name in ("gateway", "worker", "init"):
        settings = config.load(_env(name))
        host, _, port = settings.kafka_bootstrap.partition(":")
        assert host == "kafka"
        assert f"//kafka:{port}" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
        url = urlparse(settings.clickhouse_url)
        assert (url.hostname, url.port) == ("clickhouse", 8123)
        assert url.password == _resolve(SERVICES["clickhouse"]["environment"]["CLICKHOUSE_PASSWORD"])


def test_kafka_image_matches_the_local_broker_version() -> None:
    image = SERVICES["kafka"]["image"]
    assert image == f"apache/kafka:{kafka_version()}"
    env = _env("kafka")
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    # what the containers publish is what they advertise to clients on the host
    for _, host_port, _ in _ports("kafka"):
        assert f"//127.0.0.1:{host_port}" in env["KAFKA_ADVERTISED_LISTENERS"]


def test_pulse_image_is_built_from_files_that_exist() -> None:
    for name in ("gateway", "worker", "init"):
        build = SERVICES[name]["build"]
        assert (REPO / build["context"] / build["dockerfile"]).is_file()
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY"):
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), f"Dockerfile copies missing {source}"
    assert 'ENTRYPOINT ["pulse"]' in dockerfile


def test_bind_mounts_exist_and_grafana_provisioning_lines_up() -> None:
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).is_dir(), f"{name} mounts missing {source}"
    grafana = SERVICES["grafana"]
    assert "grafana-clickhouse-datasource" in _env("grafana")["GF_INSTALL_PLUGINS"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"]}
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    assert mounts["./grafana/dashboards"] == "/var/lib/grafana/dashboards"
    providers = list((REPO / "grafana" / "provisioning" / "dashboards").glob("*.y*ml"))
    if not providers:
        pytest.skip("grafana/provisioning/dashboards is not generated yet")
    for path in providers:
        for provider in yaml.safe_load(path.read_text())["providers"]:
            assert provider["options"]["path"] == mounts["./grafana/dashboards"], path


@pytest.mark.prometheus
@pytest.mark.parametrize("name", ["prometheus.yml", "prometheus.compose.yml"])
def test_prometheus_configs_pass_promtool(name: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    result = subprocess.run(
        [promtool, "check", "config", name],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
