"""Gateway throughput and latency, with real Kafka acknowledgements and without.

    .venv/bin/python bench/gateway_throughput.py [--requests 20000] [--rate 1000] [--workers 1,2] [--json PATH]

Starts a single-node Kafka broker (pipeline.stack.kafka) on free 127.0.0.1 ports
and, for each process count in ``--workers``, two gateways running the same app the
way ``pulse gateway --workers N`` does: one with the real producer (acks=all,
idempotent), one with ``NoKafka``, a producer that answers at once and exists only
in this script. A load generator in a separate process (asyncio protocols on uvloop,
pre-built signed requests, keep-alive connections; the same for both) sends signed
GitHub deliveries (distinct comment ids, so each is a distinct event):

- closed loop: as fast as the gateway answers, ``--concurrency`` in flight;
  accepted deliveries per second;
- open loop: ``--rate`` deliveries per second on a fixed schedule; p50/p99 latency
  counted from each request's due time.

CPU time per delivery of the gateway (all its processes and threads), the broker and
the load generator is measured over the same window. Prints the figures side by side
and, with ``--json``, writes them as a bench.figures.Report. Everything it starts is
stopped by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.figures import Figure, Report, write  # noqa: E402
from bench.harness import cpu_seconds  # noqa: E402
from pipeline import config  # noqa: E402
from pipeline.events import CanonicalEvent  # noqa: E402
from pipeline.gateway.producer import RawDelivery  # noqa: E402

SECRET = "bench-github-secret-0123456789"
PREFIX = "bench."
WARMUP = 200  # requests before each measured run, not counted
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


def _settings() -> config.Settings:
    return config.load({**os.environ, "PULSE_LOG_LEVEL": "WARNING"})


def kafka_app() -> Any:
    """The app with the real producer (acks=all, idempotent); a uvicorn factory for each worker."""
    from pipeline.gateway.app import create_app
    from pipeline.gateway.producer import KafkaDeliveryProducer

    settings = _settings()
    return create_app(settings, KafkaDeliveryProducer(settings, linger_ms=int(os.environ["BENCH_LINGER_MS"])))


def bare_app() -> Any:
    """The same app answering without Kafka (bench only)."""
    from pipeline.gateway.app import create_app

    return create_app(_settings(), NoKafka())


def serve(mode: str, port: int, bootstrap: str, prefix: str, linger_ms: int, workers: int) -> None:
    from pipeline.gateway.command import serve as serve_gateway

    os.environ.update({
        "PULSE_KAFKA_BOOTSTRAP": bootstrap,
        "PULSE_TOPIC_PREFIX": prefix,
        "PULSE_GITHUB_WEBHOOK_SECRET": SECRET,
        # one hook id sends everything here: the per-sender limit would measure itself
        "PULSE_RATE_LIMIT_PER_S": "0",
        "BENCH_LINGER_MS": str(linger_ms),
    })
    # the same code path as `pulse gateway --workers N` (uvicorn's supervisor for N > 1)
    serve_gateway(f"gateway_throughput:{mode}_app", host="127.0.0.1", port=port, workers=workers,
                  log_level="warning", timeout_keep_alive=60)


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


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time (no pipelining)."""

    def __init__(self, done: Callable[[_Connection, int], None]) -> None:
        self._done = done
        self._buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.started = 0.0  # when the request in flight was due
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)

    def send(self, request: bytes, due: float) -> None:
        self.started = due
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buffer[:end])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if len(buffer) < end + 4 + length:
            return
        status = int(head[9:12])
        del buffer[: end + 4 + length]
        self._done(self, status)


async def load(url: str, n: int, concurrency: int, rate: float | None, watch: Sequence[int] = ()) -> dict[str, Any]:
    """A lean HTTP/1.1 load generator: pre-built signed requests on ``concurrency`` keep-alive connections.

    asyncio protocols on uvloop, no per-request task, garbage collection frozen: it takes a small
    share of the CPU the server and the broker need on the same machine, for bare and Kafka alike.
    Closed loop without ``rate``: every connection sends its next request as soon as the answer
    arrives. With ``rate``: request i is due at start + i/rate, sent on a free connection (or as
    soon as one frees up) and its latency counts from that due time, so a stalled server cannot
    hide queueing (no coordinated omission). ``watch``: processes (with their children) whose CPU
    time is measured over the same window as the requests.
    """
    port = int(url.rsplit(":", 1)[1])
    work = [request_bytes(body, headers, port) for body, headers in deliveries(n + WARMUP)]
    gc.collect()
    gc.freeze()  # the requests live until the end: no collector pauses in the measurement
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    free: list[_Connection] = []
    backlog: deque[tuple[int, float]] = deque()  # open loop: due requests waiting for a connection
    # warm-up first (closed loop, not measured), then the measured run
    state = {"open": False, "next": 0, "limit": WARMUP, "offset": n, "answered": 0, "expected": WARMUP}
    finished: asyncio.Future[None] = loop.create_future()
    perf = time.perf_counter

    def dispatch(connection: _Connection) -> None:
        if state["open"]:
            if backlog:
                i, due = backlog.popleft()
                connection.send(work[i], due)
            else:
                free.append(connection)
        elif state["next"] < state["limit"]:
            i = state["next"]
            state["next"] += 1
            connection.send(work[state["offset"] + i], perf())
        else:
            free.append(connection)

    def done(connection: _Connection, status: int) -> None:
        latencies.append(perf() - connection.started)
        statuses[status] += 1
        state["answered"] += 1
        if state["answered"] == state["expected"]:
            finished.set_result(None)
        dispatch(connection)

    connections = []
    for _ in range(concurrency):
        _, protocol = await loop.create_connection(lambda: _Connection(done), "127.0.0.1", port)
        connections.append(protocol)
    for connection in connections:
        dispatch(connection)
    await finished
    latencies.clear()
    statuses.clear()
    finished = loop.create_future()
    state.update(open=bool(rate), next=0, limit=n, offset=0, answered=0, expected=n)
    start = perf()
    cpu_start = time.process_time()
    watched_start = [tree_cpu_seconds(pid) for pid in watch]
    if rate:
        free.clear()
        free.extend(connections)
        for i in range(n):
            due = start + i / rate
            delay = due - perf()
            if delay > 0.0005:
                await asyncio.sleep(delay)
            if free:
                free.pop().send(work[i], due)
            else:
                backlog.append((i, due))
    else:
        free.clear()
        for connection in connections:
            dispatch(connection)
    await finished
    elapsed = perf() - start
    watched = [(tree_cpu_seconds(pid) - before) * 1000 / n for pid, before in zip(watch, watched_start, strict=True)]
    for connection in connections:
        assert connection.transport is not None
        connection.transport.close()
    latencies.sort()
    return {
        "requests": n,
        "elapsed_s": elapsed,
        "accepted_per_s": statuses[202] / elapsed,
        "statuses": dict(statuses),
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "load_cpu_ms": (time.process_time() - cpu_start) * 1000 / n,
        "watched_cpu_ms": watched,
    }


# ---------------------------------------------------------------- orchestration


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and its live descendants (a gateway with worker processes)."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            total += cpu_seconds(current)
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def run_load(url: str, n: int, concurrency: int, rate: float | None, watch: Sequence[int]) -> dict[str, Any]:
    command = [sys.executable, __file__, "--role", "load", "--url", url, "--requests", str(n),
               "--concurrency", str(concurrency), "--watch", ",".join(str(pid) for pid in watch)]
    if rate:
        command += ["--load-rate", str(rate)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if out.returncode != 0:
        raise SystemExit(f"load generator failed:\n{out.stderr[-3000:]}")
    result = dict(json.loads(out.stdout))
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


def measure(args: argparse.Namespace, bootstrap: str, broker_pid: int, workers: int) -> dict[str, dict[str, Any]]:
    """The four runs (bare and Kafka, closed and open loop) with ``workers`` gateway processes each."""
    from pipeline.stack.process import free_port, wait_http

    servers: list[subprocess.Popen[bytes]] = []
    urls, pids = {}, {}
    results: dict[str, dict[str, Any]] = {}
    try:
        for mode in ("kafka", "bare"):
            port = free_port()
            servers.append(subprocess.Popen(
                [sys.executable, __file__, "--role", "serve", "--mode", mode, "--port", str(port),
                 "--bootstrap", bootstrap, "--prefix", PREFIX, "--linger-ms", str(args.linger_ms),
                 "--workers", str(workers)],
            ))
            urls[mode] = f"http://127.0.0.1:{port}"
            pids[mode] = servers[-1].pid
            wait_http(urls[mode] + "/readyz", 60, servers[-1])
            if workers > 1:  # every worker connected to Kafka (readyz answers from one of them)
                for _ in range(4 * workers):
                    wait_http(urls[mode] + "/readyz", 60, servers[-1])
        # the broker's JIT compiler warms up on the first thousands of records: not measured
        run_load(urls["kafka"], args.broker_warmup, args.concurrency, None, [])
        for mode in ("bare", "kafka"):
            print(f"{mode}, {workers} process(es): closed loop, {args.requests} deliveries, "
                  f"{args.concurrency} in flight", file=sys.stderr)
            results[f"{mode} max"] = run_load(urls[mode], args.requests, args.concurrency, None,
                                              [pids[mode], broker_pid])
            print(f"{mode}, {workers} process(es): open loop at {args.rate:.0f}/s", file=sys.stderr)
            results[f"{mode} @{args.rate:.0f}/s"] = run_load(urls[mode], int(args.rate * args.seconds), 64,
                                                             args.rate, [pids[mode], broker_pid])
    finally:
        for server in servers:
            stop(server)
    return results


def report(args: argparse.Namespace, by_workers: dict[int, dict[str, dict[str, Any]]]) -> Report:
    rate = f"{args.rate:.0f}/s"
    out = Report("gateway", "python bench/gateway_throughput.py " + " ".join(sys.argv[1:]))
    out.notes.append(f"{args.requests} deliveries per closed-loop run ({args.concurrency} in flight); "
                     f"open loop {args.rate:.0f}/s for {args.seconds:.0f} s; producer linger_ms={args.linger_ms}; "
                     "server, broker and load generator on the same machine")
    for workers, results in by_workers.items():
        suffix = "" if workers == 1 else f", {workers} processes"
        bare, kafka = results["bare max"], results["kafka max"]
        bare_open, kafka_open = results[f"bare @{rate}"], results[f"kafka @{rate}"]
        ratio = kafka["accepted_per_s"] / bare["accepted_per_s"]
        out.add(Figure(f"kafka, closed loop{suffix}", round(kafka["accepted_per_s"]), "deliveries/s",
                       f"bare, closed loop{suffix}", round(bare["accepted_per_s"]), ">= 50 % of bare", ratio >= 0.5))
        out.add(Figure(f"kafka p99 @{rate}{suffix}", round(kafka_open["p99_ms"], 1), "ms",
                       f"bare p99 @{rate}{suffix}", round(bare_open["p99_ms"], 1), "< 50 ms",
                       kafka_open["p99_ms"] < 50 and kafka_open["accepted_per_s"] >= 0.98 * args.rate))
        out.add(Figure(f"kafka p50 @{rate}{suffix}", round(kafka_open["p50_ms"], 1), "ms",
                       f"bare p50 @{rate}{suffix}", round(bare_open["p50_ms"], 1)))
        out.add(Figure(f"kafka accepted @{rate}{suffix}", round(kafka_open["accepted_per_s"]), "deliveries/s",
                       f"bare accepted @{rate}{suffix}", round(bare_open["accepted_per_s"])))
        out.add(Figure(f"gateway CPU per delivery, kafka @{rate}{suffix}", round(kafka_open["watched_cpu_ms"][0], 3),
                       "ms", f"gateway CPU per delivery, bare @{rate}{suffix}",
                       round(bare_open["watched_cpu_ms"][0], 3)))
        out.add(Figure(f"broker CPU per delivery @{rate}{suffix}", round(kafka_open["watched_cpu_ms"][1], 3), "ms"))
        out.add(Figure(f"load generator CPU per delivery, kafka @{rate}{suffix}", round(kafka_open["load_cpu_ms"], 3),
                       "ms"))
    return out


def main(args: argparse.Namespace) -> None:
    from pipeline.stack.kafka import KafkaBroker
    from pipeline.stack.process import free_port
    from pipeline.stack.topics import create_topics

    worker_counts = [int(w) for w in args.workers.split(",")]
    data_dir = Path(tempfile.mkdtemp(prefix="pulse-bench-gateway-"))
    broker = KafkaBroker(data_dir / "kafka", free_port(), free_port(), die_with_parent=True)
    by_workers: dict[int, dict[str, dict[str, Any]]] = {}
    try:
        print(f"starting Kafka on {broker.bootstrap} ...", file=sys.stderr)
        broker.start()
        broker.wait_ready(120)
        create_topics(broker.bootstrap, PREFIX)
        assert broker.pid is not None
        for workers in worker_counts:
            by_workers[workers] = measure(args, broker.bootstrap, broker.pid, workers)
    finally:
        broker.stop()
        shutil.rmtree(data_dir, ignore_errors=True)

    rate = f"{args.rate:.0f}/s"
    print(f"\ngateway throughput (linger_ms={args.linger_ms}, {os.cpu_count()} cores, "
          "server, broker and load generator on the same machine; CPU in ms per delivery)")
    print(f"{'run':<26}{'requests':>9}{'accepted/s':>11}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'gateway':>9}{'broker':>8}{'loadgen':>8}{'load avg':>10}  statuses")
    for workers, results in by_workers.items():
        for name, r in results.items():
            label = f"{name}, {workers} proc"
            gateway_cpu, broker_cpu = r["watched_cpu_ms"]
            print(f"{label:<26}{r['requests']:>9}{r['accepted_per_s']:>11.0f}{r['p50_ms']:>9.1f}"
                  f"{r['p99_ms']:>9.1f}{gateway_cpu:>9.2f}{broker_cpu:>8.2f}{r['load_cpu_ms']:>8.2f}"
                  f"{r['load_avg']:>10.1f}  {r['statuses']}")
    print()
    for workers, results in by_workers.items():
        bare, kafka = results["bare max"], results["kafka max"]
        print(f"{workers} process(es): with Kafka acks {kafka['accepted_per_s'] / bare['accepted_per_s']:.0%} "
              f"of the bare rate (target >= 50%); p99 at {rate} with Kafka: "
              f"{results[f'kafka @{rate}']['p99_ms']:.1f} ms (target < 50 ms)")
    write(args.json, report(args, by_workers))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=("main", "serve", "load"), default="main", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("kafka", "bare"), default="kafka", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", default="", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="", help=argparse.SUPPRESS)
    parser.add_argument("--url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--load-rate", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--watch", default="", help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=20000, help="deliveries per closed-loop run")
    parser.add_argument("--concurrency", type=int, default=32, help="in flight in the closed loop")
    parser.add_argument("--rate", type=float, default=1000.0, help="deliveries per second in the open loop")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the open-loop run")
    parser.add_argument("--linger-ms", type=int, default=5, help="producer linger_ms")
    parser.add_argument("--workers", default="1,2",
                        help="gateway process counts to measure, comma-separated (pulse gateway --workers N)")
    parser.add_argument("--broker-warmup", type=int, default=3000,
                        help="deliveries through the Kafka gateway before measuring (JIT warm-up)")
    parser.add_argument("--json", default=None, help="write the figures here (bench.figures.Report)")
    ns = parser.parse_args()
    if ns.role == "serve":
        serve(ns.mode, ns.port, ns.bootstrap, ns.prefix, ns.linger_ms, int(ns.workers))
    elif ns.role == "load":
        import uvloop

        print(json.dumps(uvloop.run(load(ns.url, ns.requests, ns.concurrency, ns.load_rate,
                                          [int(p) for p in ns.watch.split(",") if p]))))
    else:
        main(ns)
