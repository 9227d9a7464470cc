"""Soak: steady simulated traffic for a chosen time, sampling memory and lag.

    pulse stack up                     # or any broker: PULSE_KAFKA_BOOTSTRAP
    .venv/bin/python bench/soak.py --minutes 30 --rate 200

Starts its own ``pulse gateway`` and ``pulse worker`` (with the ClickHouse sink on an
embedded store in a temp dir) on free 127.0.0.1 ports, under a fresh topic prefix on the
broker of PULSE_KAFKA_BOOTSTRAP, and sends canonical events to ``POST /v1/events`` at
``--rate`` events per second (batches of ``--batch``) over ``--communities`` live
communities. Every ``--interval`` seconds it prints one row: events accepted, the RSS of
gateway and worker, the worker's consumer lag (messages) and stream lag (seconds), and
refused/failed answers, so growth can be seen. At the end: first vs last RSS after the
warm-up. Not a test: figures only. Both processes are stopped by pid on exit or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from pipeline import config
from pipeline.stack.process import StackError, free_port, terminate, wait_http
from pipeline.stack.topics import create_topics

MiB = 1024 * 1024


def rss_mib(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def metric_total(text: str, name: str) -> float:
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", re.M)
    return sum(float(v) for v in pattern.findall(text))


class Sender:
    """Sends live events at a steady rate from one thread; counts answers."""

    def __init__(self, url: str, token: str, rate: float, batch: int, communities: int) -> None:
        self.url, self.token, self.rate, self.batch, self.communities = url, token, rate, batch, communities
        self.accepted = 0
        self.answers: Counter[str] = Counter()
        self.stop = threading.Event()
        self._n = 0
        self._threads: dict[str, list[str]] = {}

    def _events(self) -> list[dict[str, Any]]:
        rng = random.Random(self._n)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        out = []
        for _ in range(self.batch):
            self._n += 1
            community = f"soak-c{rng.randrange(self.communities)}"
            threads = self._threads.setdefault(community, [])
            body: dict[str, Any] = {"event_id": f"soak-{self._n}-{uuid.uuid4().hex[:6]}", "platform": "soak",
                                    "space_id": "soak", "community_id": community, "actor_id": f"u{rng.randrange(50)}",
                                    "occurred_at": now}
            if threads and rng.random() < 0.6:
                body.update(kind="reply", thread_id=rng.choice(threads))
            else:
                body.update(kind="thread_started", thread_id=body["event_id"])
                threads.append(body["event_id"])
                del threads[:-100]  # bounded: replies go to recent threads
            out.append(body)
        return out

    def run(self) -> None:
        interval = self.batch / self.rate
        next_at = time.monotonic()
        with httpx.Client(base_url=self.url, timeout=30,
                          headers={"authorization": f"Bearer {self.token}"}) as client:
            while not self.stop.is_set():
                events = self._events()
                try:
                    r = client.post("/v1/events", json=events)
                    self.answers[str(r.status_code)] += 1
                    if 200 <= r.status_code < 300:
                        self.accepted += len(events)
                except httpx.TransportError as exc:
                    self.answers[type(exc).__name__] += 1
                next_at += interval
                self.stop.wait(max(0.0, next_at - time.monotonic()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=200.0, help="events per second")
    parser.add_argument("--batch", type=int, default=10, help="events per request")
    parser.add_argument("--communities", type=int, default=50)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before the RSS baseline")
    args = parser.parse_args()

    bootstrap = os.environ.get("PULSE_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    prefix = f"soak-{uuid.uuid4().hex[:8]}."
    create_topics(bootstrap, prefix)
    tmp = Path(tempfile.mkdtemp(prefix="pulse-soak-"))
    token = uuid.uuid4().hex
    gw_port, wk_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update({"PULSE_KAFKA_BOOTSTRAP": bootstrap, "PULSE_TOPIC_PREFIX": prefix, "PULSE_STATE_DIR": str(tmp),
                "PULSE_CLICKHOUSE_URL": f"chdb://{tmp / 'ch'}", "PULSE_INGEST_TOKENS": f"soak={token}",
                "PULSE_GATEWAY_PORT": str(gw_port), "PULSE_WORKER_PORT": str(wk_port), "PULSE_LOG_LEVEL": "WARNING"})
    config.load({k: v for k, v in env.items() if k.startswith("PULSE_")})  # fail early on a bad setting
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for name in ("gateway", "worker"):
            with open(tmp / f"{name}.log", "wb") as log:
                processes.append(subprocess.Popen([sys.executable, "-m", "pipeline.cli", name], env=env,
                                                  stdout=log, stderr=subprocess.STDOUT))
        gateway, worker = processes
        gw_url, wk_url = f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{wk_port}"
        try:
            wait_http(gw_url + "/readyz", 90, gateway, tmp / "gateway.log")
            wait_http(wk_url + "/healthz", 90, worker, tmp / "worker.log")
        except StackError as exc:
            raise SystemExit(str(exc)) from None
        sender = Sender(gw_url, token, args.rate, args.batch, args.communities)
        thread = threading.Thread(target=sender.run, daemon=True)
        thread.start()
        print(f"soak: {args.rate:.0f} events/s for {args.minutes} min on {bootstrap} (prefix {prefix}); logs in {tmp}")
        header = f"{'t (s)':>7} {'accepted':>9} {'gw RSS MiB':>11} {'wk RSS MiB':>11} {'lag msgs':>9} " \
                 f"{'stream lag s':>13}  answers"
        print(header)
        started = time.monotonic()
        baseline: tuple[float, float] | None = None
        last = (float("nan"), float("nan"))
        while time.monotonic() - started < args.minutes * 60:
            time.sleep(args.interval)
            elapsed = time.monotonic() - started
            try:
                text = httpx.get(wk_url + "/metrics", timeout=5).text
                lag = metric_total(text, "pulse_worker_consumer_lag_messages")
                stream = metric_total(text, "pulse_worker_stream_lag_seconds")
            except httpx.HTTPError:
                lag = stream = float("nan")
            last = (rss_mib(gateway.pid), rss_mib(worker.pid))
            if baseline is None and elapsed >= args.warmup:
                baseline = last
            answers = ", ".join(f"{k}: {v}" for k, v in sorted(sender.answers.items()))
            print(f"{elapsed:7.0f} {sender.accepted:9d} {last[0]:11.1f} {last[1]:11.1f} {lag:9.0f} {stream:13.1f}"
                  f"  {answers}", flush=True)
        sender.stop.set()
        thread.join(30)
        if baseline is not None:
            print(f"RSS growth after warm-up: gateway {last[0] - baseline[0]:+.1f} MiB, "
                  f"worker {last[1] - baseline[1]:+.1f} MiB")
    except KeyboardInterrupt:
        print("interrupted")
    finally:
        for process in processes:
            terminate(process.pid, 30.0, process)
    return 0


if __name__ == "__main__":
    sys.exit(main())
