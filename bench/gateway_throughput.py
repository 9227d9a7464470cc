"""Gateway throughput and latency, with real Kafka acknowledgements and without.

    .venv/bin/python bench/gateway_throughput.py [--requests 6000] [--rate 1000]

Starts a single-node Kafka broker (pipeline.stack.kafka) on free 127.0.0.1 ports
and two gateway processes running the same app: one with the real producer
(acks=all, idempotent), one with ``NoKafka``, a producer that answers at once and
exists only in this script. A load generator in a separate process (httpx async,
bounded concurrency) sends signed GitHub deliveries (distinct comment ids, so each
is a distinct event) over keep-alive connections to each gateway:

- closed loop: as fast as the gateway answers, ``--concurrency`` in flight;
  accepted deliveries per second;
- open loop: ``--rate`` deliveries per second on a fixed schedule; p50/p99 latency.

Prints the figures side by side. Everything it starts is stopped by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline import config  # noqa: E402
from pipeline.events import CanonicalEvent  # noqa: E402
from pipeline.gateway.producer import RawDelivery  # noqa: E402

SECRET = "bench-github-secret-0123456789"
FIXTURE = ROOT / "tests" / "fixtures" / "webhooks" / "github" / "discussion_comment__1.json"


class NoKafka:
    """The bare comparison: the same app and request path, but nothing is stored (bench only)."""

    async def start(self) -> None:
        return None

    async def store(self, raw: RawDelivery, events: Sequence[CanonicalEvent]) -> None:
        for event in events:
            event.to_json_bytes()  # same serialization work as the real producer

    async def ready(self) -> bool:
        return True

    async def close(self) -> None:
        return None


# ---------------------------------------------------------------- roles


def serve(mode: str, port: int, bootstrap: str, prefix: str, linger_ms: int) -> None:
    import uvicorn

    from pipeline.gateway.app import create_app
    from pipeline.gateway.producer import KafkaDeliveryProducer

    settings = config.load({
        "PULSE_KAFKA_BOOTSTRAP": bootstrap,
        "PULSE_TOPIC_PREFIX": prefix,
        "PULSE_GITHUB_WEBHOOK_SECRET": SECRET,
        "PULSE_LOG_LEVEL": "WARNING",
        # one hook id sends everything here: the per-sender limit would measure itself
        "PULSE_RATE_LIMIT_PER_S": "0",
    })
    producer: Any = KafkaDeliveryProducer(settings, linger_ms=linger_ms) if mode == "kafka" else NoKafka()
    uvicorn.run(create_app(settings, producer), host="127.0.0.1", port=port, log_level="warning",
                access_log=False, server_header=False, date_header=False, timeout_keep_alive=60)


def deliveries(n: int) -> list[tuple[bytes, dict[str, str]]]:
    from pipeline.gateway.signatures import sign_github

    template = json.loads(FIXTURE.read_bytes())
    out = []
    for i in range(n):
        template["comment"]["id"] = 10_000_000 + i
        body = json.dumps(template, separators=(",", ":")).encode()
        headers = {"content-type": "application/json", "x-github-event": "discussion_comment",
                   "x-github-delivery": f"bench-{i}", **sign_github(SECRET, body)}
        out.append((body, headers))
    return out


def request_bytes(body: bytes, headers: dict[str, str], port: int) -> bytes:
    head = ["POST /webhooks/github HTTP/1.1", f"host: 127.0.0.1:{port}", f"content-length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """One request on a keep-alive connection; returns the status code."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def load(url: str, n: int, concurrency: int, rate: float | None) -> dict[str, Any]:
    """A lean HTTP/1.1 load generator: pre-built requests on ``concurrency`` keep-alive connections.

    Closed loop without ``rate``; with it, request i is due at start + i/rate and its latency
    counts from that due time (so a stalled server cannot hide queueing: no coordinated omission).
    """
    port = int(url.rsplit(":", 1)[1])
    work = [request_bytes(body, headers, port) for body, headers in deliveries(n + 200)]
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(concurrency)]
    for i in range(min(200, n)):  # warm up code paths
        await _exchange(*connections[i % concurrency], work[n + i])
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for connection in connections:
        pool.put_nowait(connection)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    start = time.perf_counter()

    async def one(i: int) -> None:
        due = start + i / rate if rate else time.perf_counter()
        if rate:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        connection = await pool.get()
        try:
            statuses[await _exchange(*connection, work[i])] += 1
        finally:
            pool.put_nowait(connection)
        latencies.append(time.perf_counter() - due)

    if rate:
        await asyncio.gather(*(one(i) for i in range(n)))
    else:
        counter = iter(range(n))

        async def worker() -> None:
            for i in counter:
                await one(i)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    for _, writer in connections:
        writer.close()
    latencies.sort()
    return {
        "requests": n,
        "elapsed_s": elapsed,
        "accepted_per_s": statuses[202] / elapsed,
        "statuses": dict(statuses),
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    }


# ---------------------------------------------------------------- orchestration


def wait_http(url: str, path: str, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url}{path} did not answer 200 within {timeout:.0f} s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_load(url: str, n: int, concurrency: int, rate: float | None, server_pid: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--role", "load", "--url", url, "--requests", str(n),
               "--concurrency", str(concurrency)]
    if rate:
        command += ["--load-rate", str(rate)]
    cpu_before = cpu_seconds(server_pid)
    out = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if out.returncode != 0:
        raise SystemExit(f"load generator failed:\n{out.stderr[-3000:]}")
    result = dict(json.loads(out.stdout))
    # includes the warm-up requests; the broker's own CPU is not in it
    result["server_cpu_ms"] = (cpu_seconds(server_pid) - cpu_before) * 1000 / (n + min(200, n))
    result["load_avg"] = os.getloadavg()[0]
    return result


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(5)


def main(args: argparse.Namespace) -> None:
    from pipeline.stack.kafka import KafkaBroker
    from pipeline.stack.process import free_port
    from pipeline.stack.topics import create_topics

    data_dir = Path(tempfile.mkdtemp(prefix="pulse-bench-gateway-"))
    broker = KafkaBroker(data_dir / "kafka", free_port(), free_port(), die_with_parent=True)
    servers: list[subprocess.Popen[bytes]] = []
    try:
        print(f"starting Kafka on {broker.bootstrap} ...", file=sys.stderr)
        broker.start()
        broker.wait_ready(120)
        prefix = "bench."
        create_topics(broker.bootstrap, prefix)
        urls, pids = {}, {}
        for mode in ("kafka", "bare"):
            port = free_port()
            servers.append(subprocess.Popen(
                [sys.executable, __file__, "--role", "serve", "--mode", mode, "--port", str(port),
                 "--bootstrap", broker.bootstrap, "--prefix", prefix, "--linger-ms", str(args.linger_ms)],
            ))
            urls[mode] = f"http://127.0.0.1:{port}"
            pids[mode] = servers[-1].pid
            wait_http(urls[mode], "/readyz")
        results: dict[str, dict[str, Any]] = {}
        for mode in ("bare", "kafka"):
            print(f"{mode}: closed loop, {args.requests} deliveries, {args.concurrency} in flight",
                  file=sys.stderr)
            results[f"{mode} max"] = run_load(urls[mode], args.requests, args.concurrency, None, pids[mode])
            print(f"{mode}: open loop at {args.rate:.0f}/s", file=sys.stderr)
            n = int(args.rate * args.seconds)
            results[f"{mode} @{args.rate:.0f}/s"] = run_load(urls[mode], n, 64, args.rate, pids[mode])
    finally:
        for server in servers:
            stop(server)
        broker.stop()
        shutil.rmtree(data_dir, ignore_errors=True)

    print(f"\ngateway throughput (linger_ms={args.linger_ms}, {os.cpu_count()} cores, "
          "server, broker and load generator on the same machine)")
    print(f"{'run':<16}{'requests':>9}{'accepted/s':>11}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'server CPU ms/req':>19}{'load avg':>10}  statuses")
    for name, r in results.items():
        print(f"{name:<16}{r['requests']:>9}{r['accepted_per_s']:>11.0f}{r['p50_ms']:>9.1f}"
              f"{r['p99_ms']:>9.1f}{r['server_cpu_ms']:>19.2f}{r['load_avg']:>10.1f}  {r['statuses']}")
    bare, kafka = results["bare max"], results["kafka max"]
    print(f"\nwith Kafka acks: {kafka['accepted_per_s'] / bare['accepted_per_s']:.0%} of the bare rate "
          f"(target >= 50%); p99 at {args.rate:.0f}/s with Kafka: "
          f"{results[f'kafka @{args.rate:.0f}/s']['p99_ms']:.1f} ms (target < 50 ms)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=("main", "serve", "load"), default="main", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("kafka", "bare"), default="kafka", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", default="", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="", help=argparse.SUPPRESS)
    parser.add_argument("--url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--load-rate", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=6000, help="deliveries per closed-loop run")
    parser.add_argument("--concurrency", type=int, default=32, help="in flight in the closed loop")
    parser.add_argument("--rate", type=float, default=1000.0, help="deliveries per second in the open loop")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of the open-loop run")
    parser.add_argument("--linger-ms", type=int, default=5, help="producer linger_ms")
    ns = parser.parse_args()
    if ns.role == "serve":
        serve(ns.mode, ns.port, ns.bootstrap, ns.prefix, ns.linger_ms)
    elif ns.role == "load":
        print(json.dumps(asyncio.run(load(ns.url, ns.requests, ns.concurrency, ns.load_rate))))
    else:
        main(ns)
