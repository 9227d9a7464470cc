"""Run the local stack without Docker: a single-node Kafka (KRaft, from Maven jars) with
the pipeline's topics, and Prometheus scraping the gateway and the worker.

  pulse stack up       fetch the Kafka jars once, format storage once, start Kafka on the
                       port of PULSE_KAFKA_BOOTSTRAP (127.0.0.1), create the topics (with
                       PULSE_TOPIC_PREFIX), start Prometheus on PULSE_PROMETHEUS_PORT
  pulse stack status   what runs where: pid, alive, port
  pulse stack down     stop by pid exactly what `up` started
  pulse stack topics   only create the topics on PULSE_KAFKA_BOOTSTRAP, wherever it runs
                       (idempotent; docker-compose.yml's `init` service uses it)

Everything listens on 127.0.0.1 only. Data, logs and pid files live in
PULSE_STATE_DIR/stack/ (Kafka's data survives `down`; delete the directory to start over).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import Settings

HELP = "start, inspect or stop the local Kafka + Prometheus (no Docker)"

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_TEMPLATE = REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml"
LOCAL_HOSTS = ("127.0.0.1", "localhost")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("up", "down", "status", "topics"), help="what to do")
    parser.add_argument("--no-prometheus", action="store_true", help="up: start Kafka and the topics only")
    parser.add_argument(
        "--timeout",
        type=float,
        default=90.0,
        help="up/topics: seconds to wait for each server to be ready (default 90)",
    )
    parser.add_argument("--json", action="store_true", help="status: print JSON")


def run(args: argparse.Namespace, settings: Settings) -> int:
    import logging

    from pipeline.stack.process import StackError

    # kafka-python narrates every connection at INFO; our own progress lines say enough
    logging.getLogger("kafka").setLevel(max(logging.WARNING, logging.getLogger().level))
    stack_dir = settings.state_dir.resolve() / "stack"
    try:
        if args.action == "up":
            return _up(settings, stack_dir, args)
        if args.action == "down":
            return _down(stack_dir)
        if args.action == "topics":
            return _topics(settings, args.timeout)
        return _status(stack_dir, as_json=args.json)
    except StackError as exc:
        print(f"pulse stack {args.action}: error: {exc}", file=sys.stderr)
        return 1


# ---------------------------------------------------------------- pure helpers


@dataclass(frozen=True)
class Record:
    """What `up` started, as written to PULSE_STATE_DIR/stack/<name>.json."""

    name: str
    pid: int
    port: int
    marker: str  # a string in the process's command line (its config file)
    log: str
    extra: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps(
            {"name": self.name, "pid": self.pid, "port": self.port, "marker": self.marker,
             "log": self.log, **self.extra},
            indent=2,
        )  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> Record:
        data = json.loads(text)
        known = {"name", "pid", "port", "marker", "log"}
        return cls(
            name=str(data["name"]),
            pid=int(data["pid"]),
            port=int(data["port"]),
            marker=str(data["marker"]),
            log=str(data["log"]),
            extra={k: v for k, v in data.items() if k not in known},
        )


def local_kafka_port(bootstrap: str) -> int:
    """The port of the first bootstrap server, which must be on this machine."""
    first = bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if host not in LOCAL_HOSTS:
        from pipeline.stack.process import StackError

        raise StackError(
            f"PULSE_KAFKA_BOOTSTRAP is {bootstrap!r}; `pulse stack` runs Kafka on 127.0.0.1 only, "
            "so set it to 127.0.0.1:PORT (or use an existing Kafka and skip `pulse stack`)"
        )
    return int(port)


def render_prometheus_config(template: str, gateway_port: int, worker_port: int, rules_dir: Path) -> str:
    """The template with the targets' ports from the settings and an absolute rules path."""
    import yaml

    config = yaml.safe_load(template)
    ports = {"gateway": gateway_port, "worker": worker_port}
    for job in config.get("scrape_configs", []):
        port = ports.get(job.get("job_name"))
        if port is None:
            continue
        for static in job.get("static_configs", []):
            static["targets"] = [f"127.0.0.1:{port}" for _ in static.get("targets", [])]
    config["rule_files"] = [str(rules_dir / "*.yml")]
    return str(yaml.safe_dump(config, sort_keys=False))


# ---------------------------------------------------------------- shell


def _say(message: str) -> None:
    print(f"pulse stack: {message}", flush=True)


def _records(stack_dir: Path) -> list[tuple[Path, Record]]:
    records = []
    for path in sorted(stack_dir.glob("*.json")):
        try:
            records.append((path, Record.from_json(path.read_text())))
        except (OSError, ValueError, KeyError) as exc:
            _say(f"ignoring unreadable {path}: {exc}")
    return records


def _running_record(stack_dir: Path, name: str) -> Record | None:
    from pipeline.stack.process import pid_matches

    path = stack_dir / f"{name}.json"
    if not path.exists():
        return None
    try:
        record = Record.from_json(path.read_text())
    except (OSError, ValueError, KeyError):
        return None
    return record if pid_matches(record.pid, record.marker) else None


def _write(stack_dir: Path, record: Record) -> None:
    stack_dir.mkdir(parents=True, exist_ok=True)
    path = stack_dir / f"{record.name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(record.to_json())
    tmp.replace(path)


def _up(settings: Settings, stack_dir: Path, args: argparse.Namespace) -> int:
    from pipeline.stack.kafka import KafkaBroker, ensure_jars
    from pipeline.stack.process import StackError, free_port
    from pipeline.stack.topics import create_topics
    from pipeline.topics import TOPICS

    port = local_kafka_port(settings.kafka_bootstrap)
    bootstrap = f"127.0.0.1:{port}"
    kafka = _running_record(stack_dir, "kafka")
    if kafka is not None and kafka.port != port:
        raise StackError(
            f"Kafka from an earlier `up` runs on 127.0.0.1:{kafka.port} (pid {kafka.pid}), but "
            f"PULSE_KAFKA_BOOTSTRAP says port {port}; run `pulse stack down` first"
        )
    if kafka is not None:
        _say(f"Kafka already running on {bootstrap} (pid {kafka.pid})")
    else:
        libs = ensure_jars(progress=_say)
        broker = KafkaBroker(stack_dir / "kafka", port, free_port())
        if not broker.formatted:
            _say(f"formatting Kafka storage in {broker.data_dir} (once)")
        started = time.monotonic()
        broker.format(libs)
        broker.start()
        assert broker.pid is not None
        _write(
            stack_dir,
            Record(
                "kafka", broker.pid, port, str(broker.config_file), str(broker.log_file),
                {"controller_port": broker.controller_port, "data_dir": str(broker.data_dir)},
            ),
        )  # fmt: skip
        _say(f"starting Kafka on {bootstrap} (pid {broker.pid}, log {broker.log_file}) ...")
        try:
            broker.wait_ready(args.timeout)
        except Exception:
            broker.stop()
            (stack_dir / "kafka.json").unlink(missing_ok=True)
            raise
        _say(f"Kafka ready on {bootstrap} after {time.monotonic() - started:.1f} s")

    created = create_topics(bootstrap, settings.topic_prefix)
    prefix = f" with prefix {settings.topic_prefix!r}" if settings.topic_prefix else ""
    _say(f"topics{prefix}: {len(created)} of {len(TOPICS)} created (the others existed)")

    if args.no_prometheus:
        _say("Prometheus not started (--no-prometheus)")
    else:
        _up_prometheus(settings, stack_dir, args.timeout)
    return 0


def _up_prometheus(settings: Settings, stack_dir: Path, timeout: float) -> None:
    from pipeline.stack.prometheus import INSTALL_HINT, PrometheusServer, prometheus_binary

    port = settings.prometheus_port
    running = _running_record(stack_dir, "prometheus")
    if running is not None:
        _say(f"Prometheus already running on http://127.0.0.1:{running.port} (pid {running.pid})")
        return
    if prometheus_binary() is None:
        _say(f"Prometheus skipped: the `prometheus` binary is not installed; {INSTALL_HINT}")
        return
    data_dir = stack_dir / "prometheus"
    data_dir.mkdir(parents=True, exist_ok=True)
    config_file = data_dir / "prometheus.yml"
    config_file.write_text(
        render_prometheus_config(
            PROMETHEUS_TEMPLATE.read_text(),
            settings.gateway_port,
            settings.worker_port,
            PROMETHEUS_TEMPLATE.parent / "rules",
        )
    )
    server = PrometheusServer(config_file, data_dir, port)
    server.start()
    assert server.pid is not None
    _write(
        stack_dir,
        Record("prometheus", server.pid, port, str(config_file), str(server.log_file), {"data_dir": str(data_dir)}),
    )
    _say(f"starting Prometheus on {server.url} (pid {server.pid}) ...")
    try:
        server.wait_ready(timeout)
    except Exception:
        server.stop()
        (stack_dir / "prometheus.json").unlink(missing_ok=True)
        raise
    _say(
        f"Prometheus ready on {server.url}, scraping gateway :{settings.gateway_port}"
        f" and worker :{settings.worker_port}"
    )


def _topics(settings: Settings, timeout: float) -> int:
    from pipeline.stack.kafka import answers_metadata
    from pipeline.stack.process import StackError
    from pipeline.stack.topics import create_topics
    from pipeline.topics import TOPICS

    deadline = time.monotonic() + timeout
    while not answers_metadata(settings.kafka_bootstrap):
        if time.monotonic() >= deadline:
            raise StackError(f"Kafka at {settings.kafka_bootstrap} did not answer within {timeout:.0f} s")
        time.sleep(1.0)
    created = create_topics(settings.kafka_bootstrap, settings.topic_prefix)
    _say(f"topics on {settings.kafka_bootstrap}: {len(created)} of {len(TOPICS)} created (the others existed)")
    return 0


def _down(stack_dir: Path) -> int:
    from pipeline.stack.process import pid_matches, terminate

    records = _records(stack_dir)
    if not records:
        _say("nothing to stop")
        return 0
    # Prometheus first: it scrapes the others; Kafka last
    order = {"prometheus": 0, "kafka": 9}
    failed = False
    for path, record in sorted(records, key=lambda item: order.get(item[1].name, 5)):
        if pid_matches(record.pid, record.marker):
            _say(f"stopping {record.name} (pid {record.pid}) ...")
            killed = terminate(record.pid, 30.0)
            if pid_matches(record.pid, record.marker):
                _say(f"{record.name} (pid {record.pid}) is still running")
                failed = True
                continue
            _say(f"{record.name} stopped" + (" (killed after 30 s)" if killed else ""))
        else:
            _say(f"{record.name} (pid {record.pid}) was not running")
        path.unlink(missing_ok=True)
    return 1 if failed else 0


def _status(stack_dir: Path, *, as_json: bool) -> int:
    from pipeline.stack.process import pid_matches, port_accepts

    rows = []
    for _, record in _records(stack_dir):
        alive = pid_matches(record.pid, record.marker)
        rows.append(
            {
                "name": record.name,
                "pid": record.pid,
                "running": alive,
                "address": f"127.0.0.1:{record.port}",
                "listening": alive and port_accepts(record.port),
                "log": record.log,
            }
        )
    if as_json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        _say(f"not running (no pid files in {stack_dir})")
    else:
        for row in rows:
            state = "running" if row["running"] else "NOT running"
            listening = ", listening" if row["listening"] else ""
            print(f"{row['name']:<11} pid {row['pid']:<8} {state}{listening} on {row['address']}  log {row['log']}")
    # 0 = everything recorded runs; 3 = nothing or not all (like an init script)
    return 0 if rows and all(row["running"] for row in rows) else 3
