"""Process helpers shared by the end-to-end benchmarks (e2e_freshness, scale_out, many_communities).

Every server runs on 127.0.0.1 on a free port, is started with ``setpriv --pdeathsig SIGKILL`` (so a
benchmark killed by any means takes its servers with it) and is stopped by its pid. Figures are read
from outside: the processes' /metrics pages and /proc.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipeline import config, topics  # noqa: E402
from pipeline.stack import process as stack_process  # noqa: E402
from pipeline.stack.kafka import KafkaBroker  # noqa: E402
from pipeline.stack.process import free_port, terminate  # noqa: E402


def start_broker(data_dir: Path) -> KafkaBroker:
    broker = KafkaBroker(data_dir / "kafka", free_port(), free_port(), die_with_parent=True)
    broker.start()
    broker.wait_ready(120)
    return broker


def base_env(bootstrap: str, prefix: str, state_dir: Path, **extra: str) -> dict[str, str]:
    """The process environment: this one without any PULSE_* variable, plus the given settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update({"PULSE_KAFKA_BOOTSTRAP": bootstrap, "PULSE_TOPIC_PREFIX": prefix,
                "PULSE_STATE_DIR": str(state_dir), "PULSE_CLICKHOUSE_URL": f"chdb://{state_dir / 'ch'}",
                "PULSE_LOG_LEVEL": "WARNING"})  # fmt: skip
    env.update(extra)
    config.load({k: v for k, v in env.items() if k.startswith("PULSE_")})  # a bad setting fails here, not later
    return env


@dataclass
class Server:
    """One ``pulse <command>`` process; ``url`` is its HTTP address."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    log_file: Path
    started_at: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM, then SIGKILL after ``timeout``; True when it had to be killed."""
        return terminate(self.pid, timeout, self.process)

    def alive(self) -> bool:
        return self.process.poll() is None


def start_pulse(name: str, args: list[str], env: dict[str, str], port: int, log_file: Path) -> Server:
    command = [sys.executable, "-m", "pipeline.cli", *args]
    if shutil.which("setpriv"):
        command = ["setpriv", "--pdeathsig", "SIGKILL", "--", *command]  # dies with the benchmark
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, cwd=ROOT)  # fmt: skip
    return Server(name, process, f"http://127.0.0.1:{port}", log_file)


def wait_http(server: Server, path: str, timeout: float = 120.0) -> float:
    """Wait until ``path`` answers 200; seconds waited. Exits the benchmark (with the log's
    tail) if the server exits first or the time runs out."""
    try:
        return stack_process.wait_http(server.url + path, timeout, server.process, server.log_file)
    except stack_process.StackError as exc:
        raise SystemExit(f"{server.name}: {exc}") from None


# ---------------------------------------------------------------- /metrics


def metric_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of ``name`` in a Prometheus text exposition: (labels, value)."""
    out = []
    for m in re.finditer(rf"^{re.escape(name)}(?:\{{([^}}]*)\}})? (\S+)$", text, re.M):
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1) or ""))
        out.append((labels, float(m.group(2))))
    return out


def metric_sum(text: str, name: str) -> float:
    return sum(v for _, v in metric_samples(text, name))


def scrape(url: str, timeout: float = 5.0) -> str | None:
    try:
        return httpx.get(url + "/metrics", timeout=timeout).text
    except httpx.HTTPError:
        return None


def processed(text: str | None) -> float:
    """Events the worker handled (applied or dropped as duplicates)."""
    if text is None:
        return -1.0
    return metric_sum(text, "pulse_worker_events_processed_total") + metric_sum(text, "pulse_worker_duplicates_total")


def owned_partitions(text: str | None, prefix: str) -> set[int]:
    """engagement.events partitions the worker exports a lag series for (it owns them)."""
    if text is None:
        return set()
    topic = prefix + topics.EVENTS
    return {int(labels["partition"]) for labels, _ in metric_samples(text, "pulse_worker_consumer_lag_messages")
            if labels.get("topic") == topic}  # fmt: skip


# ---------------------------------------------------------------- /proc


def rss_bytes(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def du_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / f).stat().st_size
    return total


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


# ---------------------------------------------------------------- producing


def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes]]) -> int:
    """Write keyed records (acks=all) as fast as the broker takes them; how many."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, batch_size=512 * 1024,
                             max_request_size=8 * 1024 * 1024)  # fmt: skip
    n = 0
    for key, value in records:
        producer.send(topic, key=key, value=value)
        n += 1
    producer.flush(300)
    producer.close()
    return n


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def synthetic_records(
    communities: list[str], end_ms: int, span_ms: int, seed: int = 1
) -> list[tuple[bytes, bytes]]:
    """One canonical event per entry of ``communities`` (repeat a community for more), as Kafka records.

    Event times are spread evenly over ``span_ms`` before ``end_ms``, in time order; a community's
    first event starts a thread, later ones reply to its newest thread (30 % start a new one).
    """
    import random
    from datetime import UTC, datetime

    from pipeline.events import CanonicalEvent

    rng = random.Random(seed)
    threads: dict[str, int] = {}
    received = datetime.fromtimestamp(end_ms / 1000, tz=UTC)
    out = []
    n = len(communities)
    for i, cid in enumerate(communities):
        at = datetime.fromtimestamp((end_ms - span_ms + span_ms * i // max(1, n)) / 1000, tz=UTC)
        thread = threads.get(cid)
        if thread is None or rng.random() < 0.3:
            threads[cid] = thread = i
            kind, parent = "thread_started", None
        else:
            kind, parent = "reply", f"t{thread}"
        event = CanonicalEvent(event_id=f"{seed}-{i}", platform="bench", space_id="bench", community_id=cid,
                               kind=kind, actor_id=f"u{rng.randrange(20)}", thread_id=f"t{thread}",
                               parent_id=parent, occurred_at=at, received_at=received)  # fmt: skip
        out.append((cid.encode(), event.to_json_bytes()))
    return out
