"""End-to-end freshness: from a webhook's 2xx to its effect in /metrics and in ClickHouse.

    .venv/bin/python bench/e2e_freshness.py [--rates 1000,600,300] [--seconds 40] [--json PATH]

Starts a Kafka broker, ``pulse gateway`` and ``pulse worker`` (with its ClickHouse sink on an
embedded chDB in a temp dir), all on free 127.0.0.1 ports, stopped by pid at the end.

Background traffic: a load generator process sends live, signed GitHub, Discourse and Slack
deliveries (rendered by pipeline.simulate's Renderer with event time = now) for
``--communities`` communities at a steady rate (open loop, deliveries due at start + i/rate).

Probes, measured exactly: ``--probes`` dedicated Slack channels that only the prober posts to.
A probe community gets its k-th post only after post k-1 was seen everywhere, so "its effect is
visible" has one unambiguous meaning:

  (a) metrics:    the worker's /metrics shows pulse_community_posts{community_id=P,range="24h"} >= k
  (b) ClickHouse: GET /api/windows?community=P&window=1h on the worker (served from ClickHouse;
                  the embedded store belongs to the worker process) has hourly window rows whose
                  posts sum to >= k

/metrics is scraped every ``--metrics-poll`` seconds, for the four series the prober reads only
(``?name[]=``; a scrape runs on the worker's event loop;
it renders only communities whose health changed, and 4 scrapes a second instead of 1 did not
visibly change the worker's CPU at 1,000/s); the read API gets one request every ``--poll``
seconds for all waiting probes (one chDB query in the worker). A latency is the time from the
gateway's 2xx answer for post k to the poll answer that first shows it, so it over-states by up
to one poll interval. A probe channel pauses a random 0..``--gap``
seconds between posts, so probes do not fall in step with the worker's 5 s metrics export.

Levels: first ``--idle-seconds`` with probes only (the floor set by flush, export and sink
intervals: the baseline), then each rate of ``--rates`` in turn until one is sustained: the
gateway answered 2xx to >= 95 % of what was due, its last answer no later than 2 s after the
schedule's end, the worker's backlog (events the gateway's /metrics counts as produced minus
events the worker's /metrics counts as applied) stayed under one second of traffic, and every
probe was seen. If the first rate is not sustained, the highest sustained rate is reported with its
freshness, next to the figures at the first rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench import figures  # noqa: E402
from bench.harness import (  # noqa: E402
    Server,
    base_env,
    cpu_seconds,
    load_average,
    metric_samples,
    metric_sum,
    owned_partitions,
    percentile,
    processed,
    start_broker,
    start_pulse,
    wait_http,
)
from pipeline.simulate.behaviours import Action  # noqa: E402
from pipeline.simulate.model import Request  # noqa: E402
from pipeline.simulate.render import Community, Credentials, Renderer, resign_slack  # noqa: E402
from pipeline.stack.process import free_port  # noqa: E402
from pipeline.stack.topics import create_topics  # noqa: E402

PLATFORMS = ("github", "discourse", "slack")
PROBE_INDEX = 900_000  # probe communities' index: far from the traffic's 0..N-1
PROBE_TIMEOUT_S = 30.0
TARGET_P99_MS = 2000.0
SECRETS_ENV = "E2E_BENCH_SECRETS"  # how the load generator gets the signing secrets (never printed)


def credentials(values: dict[str, str]) -> Credentials:
    return Credentials(github=values["github"], discourse=lambda _instance: values["discourse"],
                       slack=values["slack"])  # fmt: skip


# ---------------------------------------------------------------- live deliveries


class LiveCommunity:
    """One community posting now: threads and replies rendered in its platform's format."""

    def __init__(self, index: int, platform: str, creds: Credentials, seed: int, behaviour: str = "live") -> None:
        self.community = Community(index, platform, behaviour)
        self.rng = random.Random(f"{seed}:{index}")
        self.renderer = Renderer(self.community, self.rng, creds, time.time())
        self.threads: list[tuple[int, int, int]] = []  # (thread number, author, posts so far)
        self.next_thread = 1

    def post(self, *, new_thread: bool | None = None, actor: int | None = None,
             at: datetime | None = None) -> list[Request]:
        now = at or datetime.now(UTC)
        self.renderer.signed_at = time.time()  # Slack signs at send time
        actor = self.rng.randrange(2, 40) if actor is None else actor
        if new_thread is None:
            new_thread = not self.threads or self.rng.random() < 0.25
        if new_thread:
            number = self.next_thread
            self.next_thread += 1
            self.threads.append((number, actor, 1))
            del self.threads[:-5]  # replies go to the five newest threads
            return self.renderer.render(Action("thread", now, actor, thread=number, post=1))
        i = self.rng.randrange(len(self.threads))
        number, author, posts = self.threads[i]
        self.threads[i] = (number, author, posts + 1)
        return self.renderer.render(
            Action("reply", now, actor, thread=number, post=posts + 1, parent_post=1, parent_actor=author)
        )


def http_bytes(request: Request, port: int) -> bytes:
    head = [f"POST {request.path} HTTP/1.1", f"host: 127.0.0.1:{port}", f"content-length: {len(request.body)}"]
    head += [f"{k}: {v}" for k, v in request.headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + request.body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> tuple[int, bytes]:
    writer.write(data)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    body = await reader.readexactly(length) if length else b""
    return int(head[9:12]), body


def render_all(rate: float, seconds: float, communities: int, seed: int, port: int) -> tuple[list[bytes], float]:
    """Every delivery of a level, rendered before sending, and the wall time sending must start.

    Event times (and Slack's signature times) are the deliveries' due times counted from that
    start, which is when rendering is expected to end (timed on a sample first, with a margin):
    the caller waits for it if rendering ends sooner. Counted from a fixed guess instead, a
    20-minute level's events were minutes ahead of the wall clock, and 327,954 deliveries were
    refused with 401 (Slack's, signed more than 5 minutes from the gateway's now).
    """
    creds = credentials(json.loads(os.environ[SECRETS_ENV]))
    rng = random.Random(seed)
    weights = [1 / (i + 1) ** 0.6 for i in range(communities)]  # mildly skewed: a few busy communities
    n = int(rate * seconds)

    def wire(request: Request, due: float) -> bytes:
        if creds.slack is not None:
            # signed for when it is due: a signature from rendering time is refused once it is
            # 5 minutes old (Slack's window), i.e. in any level longer than about 4 minutes
            request = resign_slack(request, creds.slack, due)
        return http_bytes(request, port)

    sample = [LiveCommunity(i, PLATFORMS[i % len(PLATFORMS)], creds, seed + 1) for i in range(min(communities, 50))]
    timed = time.perf_counter()
    for i in range(2000):  # the steps of the loop below
        for request in sample[i % len(sample)].post(at=datetime.now(UTC)):
            wire(request, time.time())
    per_delivery = (time.perf_counter() - timed) / 2000
    live = [LiveCommunity(i, PLATFORMS[i % len(PLATFORMS)], creds, seed) for i in range(communities)]
    start = time.time() + 2 + n * per_delivery * 1.3
    out: list[bytes] = []
    pending: deque[Request] = deque()
    while len(out) < n:
        due = start + len(out) / rate
        if not pending:
            community = rng.choices(live, weights)[0]
            pending.extend(community.post(at=datetime.fromtimestamp(due, tz=UTC)))
        out.append(wire(pending.popleft(), due))
    return out, start


async def load(url: str, rate: float, seconds: float, communities: int, seed: int, concurrency: int) -> dict[str, Any]:
    """Open-loop load: delivery i is due at start + i/rate; its latency counts from that moment."""
    port = int(url.rsplit(":", 1)[1])
    work, start_at = render_all(rate, seconds, communities, seed, port)
    await asyncio.sleep(max(0.0, start_at - time.time()))  # the time the events and signatures are for
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = asyncio.Queue()
    for _ in range(concurrency):
        pool.put_nowait(None)  # connections are opened lazily and re-opened after an error
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    events = 0
    tasks: set[asyncio.Task[None]] = set()

    async def one(data: bytes, due: float) -> None:
        nonlocal events
        connection = await pool.get()
        try:
            if connection is None:
                connection = await asyncio.open_connection("127.0.0.1", port)
            status, body = await _exchange(*connection, data)
            statuses[str(status)] += 1
            if 200 <= status < 300:
                latencies.append(time.perf_counter() - due)
                with contextlib.suppress(ValueError, AttributeError):
                    events += int(json.loads(body).get("events") or 0)
        except (OSError, asyncio.IncompleteReadError) as exc:
            statuses[type(exc).__name__] += 1
            if connection is not None:
                connection[1].close()
            connection = None
        finally:
            pool.put_nowait(connection)

    print("sending", flush=True)  # the prober starts its clock on this line
    start = time.perf_counter()
    for i, data in enumerate(work):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(data, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    behind = time.perf_counter() - (start + len(work) / rate)
    if tasks:
        await asyncio.wait(tasks, timeout=60)
    elapsed = time.perf_counter() - start
    accepted = sum(n for s, n in statuses.items() if s.startswith("2"))
    return {
        "due": len(work),
        "accepted": accepted,
        "events": events,
        "statuses": dict(statuses),
        "elapsed_s": elapsed,
        "schedule_behind_s": max(0.0, behind),
        # over the time until the last answer: a gateway that falls behind answers late, not less
        "accepted_per_s": accepted / max(seconds, elapsed),
        "p50_ms": percentile(latencies, 0.5) * 1000 if latencies else None,
        "p99_ms": percentile(latencies, 0.99) * 1000 if latencies else None,
    }


# ---------------------------------------------------------------- probes


@dataclass
class Probe:
    community: LiveCommunity
    community_id: str
    posts: int = 0  # posts accepted by the gateway so far
    seen_metrics: int = 0
    seen_clickhouse: int = 0


@dataclass
class Sample:
    sent_at: float  # monotonic time of the gateway's 2xx
    metrics_s: float | None = None
    clickhouse_s: float | None = None


# what the prober reads from the worker's /metrics, asked for by name (Prometheus' name[]): the
# whole page of 1,000 communities, four times a second, took a quarter of the worker's time
WORKER_SERIES = {
    "name[]": [
        "pulse_community_posts",
        "pulse_worker_events_processed_total",
        "pulse_worker_duplicates_total",
        "pulse_worker_consumer_lag_messages",
    ]
}


@dataclass
class Prober:
    gateway: str
    worker: str
    prefix: str
    probes: list[Probe]
    poll: float
    metrics_poll: float
    gap: float
    samples: list[Sample] = field(default_factory=list)
    lag: list[tuple[float, float]] = field(default_factory=list)  # (monotonic time, events not yet applied)
    scrape_s: list[float] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    owned: set[int] = field(default_factory=set)

    async def scrape_metrics(self, client: httpx.AsyncClient) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                text: str | None = (await client.get(self.worker + "/metrics", params=WORKER_SERIES)).text
                produced = metric_sum((await client.get(self.gateway + "/metrics")).text,
                                      "pulse_gateway_events_produced_total")  # fmt: skip
            except httpx.HTTPError:
                text = None
            now = time.monotonic()
            if text is not None:
                self.scrape_s.append(now - started)
                posts = {labels.get("community_id"): value
                         for labels, value in metric_samples(text, "pulse_community_posts")
                         if labels.get("range") == "24h"}  # fmt: skip
                for probe in self.probes:
                    probe.seen_metrics = max(probe.seen_metrics, int(posts.get(probe.community_id, 0)))
                # the backlog: events Kafka acknowledged to the gateway that the worker has not applied
                # yet (its consumer-lag gauge counts from the fetch position, which runs ahead)
                self.lag.append((now, max(0.0, produced - processed(text))))
                self.owned = owned_partitions(text, self.prefix)
            await asyncio.sleep(max(0.0, self.metrics_poll - (time.monotonic() - started)))

    async def poll_clickhouse(self, client: httpx.AsyncClient) -> None:
        """One read-API request per ``poll`` seconds for every waiting probe at once.

        ``GET /api/windows`` answers the hourly windows of several communities with one chDB query
        in the worker process (the first version polled ``/api/communities/<probe>``, four queries,
        for one probe per request: with 8 probes waiting each was seen up to 1.6 s late).
        """
        while not self.stop.is_set():
            started = time.monotonic()
            waiting = [p for p in self.probes if p.seen_clickhouse < p.posts]
            if waiting:
                query = [("community", p.community_id) for p in waiting] + [("window", "1h"), ("limit", "48")]
                try:
                    r = await client.get(f"{self.worker}/api/windows", params=query)
                    if r.status_code == 200:
                        found = r.json()
                        for probe in waiting:
                            posts = sum(int(w.get("posts") or 0) for w in found.get(probe.community_id, []))
                            probe.seen_clickhouse = max(probe.seen_clickhouse, posts)
                except httpx.HTTPError:
                    pass
            await asyncio.sleep(max(0.0, self.poll - (time.monotonic() - started)))

    async def send(self, client: httpx.AsyncClient, probe: Probe) -> float:
        """Post k+1 to the probe's channel; the moment of the gateway's 2xx."""
        for request in probe.community.post(new_thread=probe.posts == 0, actor=2 + probe.posts % 2):
            for _attempt in range(20):
                r = await client.post(self.gateway + request.path, content=request.body, headers=request.headers)
                if r.is_success:
                    break
                await asyncio.sleep(0.5)  # 503 while Kafka is slow: retried like Slack would
            else:
                raise SystemExit(f"probe refused: {r.status_code} {r.text[:200]}")
        probe.posts += 1
        return time.monotonic()

    async def run_probe(self, client: httpx.AsyncClient, probe: Probe, rng: random.Random) -> None:
        while not self.stop.is_set():
            sample = Sample(await self.send(client, probe))
            self.samples.append(sample)
            deadline = sample.sent_at + PROBE_TIMEOUT_S
            while time.monotonic() < deadline and (sample.metrics_s is None or sample.clickhouse_s is None):
                await asyncio.sleep(0.02)
                now = time.monotonic()
                if sample.metrics_s is None and probe.seen_metrics >= probe.posts:
                    sample.metrics_s = now - sample.sent_at
                if sample.clickhouse_s is None and probe.seen_clickhouse >= probe.posts:
                    sample.clickhouse_s = now - sample.sent_at
            if sample.metrics_s is None or sample.clickhouse_s is None:
                # not seen in time: wait until it is, so the next post's count is unambiguous
                while not self.stop.is_set() and (probe.seen_metrics < probe.posts or
                                                  probe.seen_clickhouse < probe.posts):  # fmt: skip
                    await asyncio.sleep(0.1)
            # a random pause: probes must not fall in step with the worker's export timer
            await asyncio.sleep(rng.uniform(0.0, self.gap))


def summarize(samples: list[Sample]) -> dict[str, Any]:
    out: dict[str, Any] = {"samples": len(samples)}
    for what in ("metrics", "clickhouse"):
        values = [getattr(s, f"{what}_s") for s in samples]
        seen = [v * 1000 for v in values if v is not None]
        timed_out = len(values) - len(seen)
        # a probe not seen within the timeout counts at the timeout: a lower bound of its latency
        ms = seen + [PROBE_TIMEOUT_S * 1000] * timed_out
        out[what] = {
            "p50_ms": percentile(ms, 0.5) if ms else None,
            "p99_ms": percentile(ms, 0.99) if ms else None,
            "max_ms": max(ms) if ms else None,
            "timed_out": timed_out,
        }
    return out


# ---------------------------------------------------------------- orchestration


def run_load(url: str, rate: float, seconds: float, args: argparse.Namespace, env: dict[str, str],
             seed: int) -> subprocess.Popen[str]:  # fmt: skip
    command = [sys.executable, __file__, "--role", "load", "--url", url, "--load-rate", str(rate),
               "--load-seconds", str(seconds), "--communities", str(args.communities), "--seed", str(seed),
               "--concurrency", str(args.concurrency)]  # fmt: skip
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True, cwd=ROOT)


async def level(prober: Prober, servers: dict[str, Server], broker_pid: int | None, rate: float,
                args: argparse.Namespace, load_env: dict[str, str], seed: int) -> dict[str, Any]:  # fmt: skip
    """One level: probes (and traffic at ``rate`` unless 0) for warm-up + measured seconds."""
    seconds = args.idle_seconds if rate == 0 else args.seconds
    warmup = 0.0 if rate == 0 else args.warmup
    pids = {name: s.pid for name, s in servers.items()} | ({"kafka": broker_pid} if broker_pid else {})
    loader = run_load(servers["gateway"].url, rate, warmup + seconds, args, load_env, seed) if rate else None
    if loader is not None:
        assert loader.stdout is not None
        line = await asyncio.to_thread(loader.stdout.readline)  # rendering done, sending starts
        if line.strip() != "sending":
            raise SystemExit(f"load generator failed before sending (exit {loader.wait()})")
    # the harness shares the machine: its load generator and this prober are counted too
    pids |= {"prober": os.getpid()} | ({"load": loader.pid} if loader is not None else {})
    cpu_before = _cpu(pids)
    started = time.monotonic()
    first_sample = len(prober.samples)
    await asyncio.sleep(warmup)
    measured_from = len(prober.samples)
    trend = Trend(prober, pids)
    if args.trend and rate:
        await trend.watch(seconds, args.trend)
    await asyncio.sleep(max(0.0, started + warmup + seconds - time.monotonic()))
    measured_to = len(prober.samples)
    wall = time.monotonic() - started
    cpu_after = _cpu(pids)
    cpu = {name: round((cpu_after[name] - cpu_before[name]) / wall, 2) for name in pids}
    traffic: dict[str, Any] = {}
    if loader is not None:
        out, _ = await asyncio.to_thread(loader.communicate, timeout=300)
        if loader.returncode != 0:
            raise SystemExit(f"load generator failed with {loader.returncode}")
        traffic = json.loads(out)
    # samples sent during the measured part; wait (bounded) for the last ones to be seen
    deadline = time.monotonic() + PROBE_TIMEOUT_S + 1
    while time.monotonic() < deadline and any(
        s.metrics_s is None or s.clickhouse_s is None for s in prober.samples[measured_from:measured_to]
    ):
        await asyncio.sleep(0.2)
    window = [lag for t, lag in prober.lag if started + warmup + seconds - 10 <= t <= started + warmup + seconds]
    max_lag = max(window, default=0.0)
    result: dict[str, Any] = {
        "rate": rate,
        "seconds": seconds,
        "load_average": load_average(),
        "cpu_cores": cpu,
        "max_backlog_last_10s": max_lag,
        "freshness": summarize(prober.samples[measured_from:measured_to]),
        "warmup_samples": measured_from - first_sample,
        "traffic": traffic,
        "trend": trend.finish(),
    }
    if rate:
        # sustained: everything due was answered 2xx without a queue building up at the gateway
        # (the last answer within 2 s of the schedule's end), the worker's backlog stayed under
        # one second of traffic, and every probe was seen within the timeout
        events_per_s = traffic["events"] / max(1.0, traffic["elapsed_s"])
        result["sustained"] = bool(
            traffic["accepted"] >= 0.95 * traffic["due"]
            and traffic["elapsed_s"] <= warmup + seconds + 2
            and max_lag <= events_per_s
            and not any(result["freshness"][w]["timed_out"] for w in ("metrics", "clickhouse"))
        )
    return result


_Mark = tuple[float, int, dict[str, float]]  # (monotonic time, samples so far, CPU seconds per process)


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


@dataclass
class Trend:
    """A long level, ``every`` seconds at a time: freshness of the probes sent in each stretch,
    the worker's backlog and each process's CPU (does the state's growth wear the pipeline
    down?). A stretch is printed one stretch later, when its probes have been seen; the last
    one by ``finish`` once the level has waited for its probes."""

    prober: Prober
    pids: dict[str, int]
    rows: list[dict[str, Any]] = field(default_factory=list)
    marks: list[_Mark] = field(default_factory=list)

    def _mark(self) -> None:
        self.marks.append((time.monotonic(), len(self.prober.samples), _cpu(self.pids)))

    async def watch(self, seconds: float, every: float) -> None:
        self._mark()
        begun = self.marks[0][0]
        while (elapsed := time.monotonic() - begun) < seconds - 1:
            await asyncio.sleep(min(every, seconds - elapsed))
            self._mark()
            if len(self.marks) > 2:
                self.rows.append(self._stretch(self.marks[-3], self.marks[-2]))

    def finish(self) -> list[dict[str, Any]]:
        if len(self.marks) > 1:
            self.rows.append(self._stretch(self.marks[-2], self.marks[-1]))
        return self.rows

    def _stretch(self, start: _Mark, end: _Mark) -> dict[str, Any]:
        (t0, first, cpu0), (t1, last, cpu1) = start, end
        row = {
            "from_s": round(t0 - self.marks[0][0]),
            "freshness": summarize(self.prober.samples[first:last]),
            "max_backlog": max((lag for t, lag in self.prober.lag if t0 <= t <= t1), default=0.0),
            "cpu_cores": {name: round((cpu1[name] - cpu0[name]) / (t1 - t0), 2) for name in cpu0},
        }
        f = row["freshness"]
        print(f"    {row['from_s']:>5} s: n={f['samples']:<3} metrics p50/p99 {f['metrics']['p50_ms'] or 0:5.0f}/"
              f"{f['metrics']['p99_ms'] or 0:5.0f} ms, ClickHouse {f['clickhouse']['p50_ms'] or 0:5.0f}/"
              f"{f['clickhouse']['p99_ms'] or 0:5.0f} ms, backlog {row['max_backlog']:.0f}, CPU {row['cpu_cores']}",
              file=sys.stderr, flush=True)  # fmt: skip
        return row


async def drain(prober: Prober, timeout: float) -> float:
    """Wait until the worker has applied (nearly) every event the gateway produced; seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        await asyncio.sleep(1.0)
        recent = [lag for t, lag in prober.lag if t >= time.monotonic() - 6]
        if recent and max(recent) <= 50:
            break
    return time.monotonic() - started


async def measure(args: argparse.Namespace, servers: dict[str, Server], broker_pid: int | None, prefix: str,
                  secret_values: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    creds = credentials(secret_values)
    probes = []
    for j in range(args.probes):
        community = LiveCommunity(PROBE_INDEX + j, "slack", creds, args.seed, behaviour="probe")
        probes.append(Probe(community, f"slack:{community.renderer.team}:{community.renderer.channel}"))
    prober = Prober(servers["gateway"].url, servers["worker"].url, prefix, probes, args.poll, args.metrics_poll,
                    args.gap)
    load_env = dict(os.environ) | {SECRETS_ENV: json.dumps(secret_values)}
    levels: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=30) as client:
        background = [asyncio.create_task(prober.scrape_metrics(client)),
                      asyncio.create_task(prober.poll_clickhouse(client))]  # fmt: skip
        # the worker owns every partition before anything is timed (group join, sink start)
        deadline = time.monotonic() + 120
        while len(prober.owned) < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        rng = random.Random(args.seed)
        runners = [asyncio.create_task(prober.run_probe(client, p, rng)) for p in probes]
        # warm-up: every probe seen once end to end
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not all(
            p.seen_metrics >= 1 and p.seen_clickhouse >= 1 for p in probes
        ):
            await asyncio.sleep(0.5)
        print(f"e2e: probes warm ({sum(p.posts for p in probes)} posts); idle level {args.idle_seconds:.0f} s",
              file=sys.stderr, flush=True)
        levels.append(await level(prober, servers, broker_pid, 0, args, load_env, args.seed))
        _print_level(levels[-1])
        for n, rate in enumerate(args.rates):
            print(f"e2e: {rate:.0f} deliveries/s for {args.warmup:.0f} + {args.seconds:.0f} s", file=sys.stderr,
                  flush=True)
            levels.append(await level(prober, servers, broker_pid, rate, args, load_env, args.seed + n + 1))
            _print_level(levels[-1])
            if levels[-1]["sustained"]:
                break
            waited = await drain(prober, args.drain_timeout)
            print(f"e2e: not sustained; drained the backlog in {waited:.0f} s", file=sys.stderr, flush=True)
        prober.stop.set()
        for task in runners + background:
            task.cancel()
        await asyncio.gather(*runners, *background, return_exceptions=True)
    scrape = statistics.median(prober.scrape_s) * 1000 if prober.scrape_s else None
    return {"levels": levels, "scrape_ms_median": scrape}


def _print_level(r: dict[str, Any]) -> None:
    f = r["freshness"]
    t = r["traffic"]
    head = "idle (probes only)" if not r["rate"] else f"{r['rate']:.0f}/s offered"
    accepted = f", accepted {t['accepted_per_s']:.0f}/s ({t['events']} events), gateway p99 {t['p99_ms']:.0f} ms, " \
               f"statuses {t['statuses']}" if t else ""
    print(f"  {head}{accepted}; worker backlog (max, last 10 s) {r['max_backlog_last_10s']:.0f}; "
          f"load {r['load_average']}; CPU cores {r['cpu_cores']}", file=sys.stderr)
    for what in ("metrics", "clickhouse"):
        m = f[what]
        if m["p50_ms"] is None:
            print(f"    {what:<10} no samples", file=sys.stderr)
            continue
        print(f"    {what:<10} n={f['samples']:<4} p50 {m['p50_ms']:7.0f} ms  p99 {m['p99_ms']:7.0f} ms  "
              f"max {m['max_ms']:7.0f} ms  timed out {m['timed_out']}", file=sys.stderr, flush=True)


def _ms(value: float | None) -> str:
    """A figure in whole units for the printed summary (the JSON keeps full precision)."""
    return "-" if value is None else f"{value:,.0f}"


def report(result: dict[str, Any], args: argparse.Namespace, command: str) -> figures.Report:
    levels = result["levels"]
    idle = levels[0]
    loaded = levels[1:]
    sustained = [lv for lv in loaded if lv.get("sustained")]
    best = max(sustained, key=lambda lv: lv["rate"]) if sustained else None
    rep = figures.Report("e2e_freshness", command)
    target_rate = args.rates[0]
    best_rate = best["traffic"]["accepted_per_s"] if best else 0.0
    rep.add(figures.Figure("highest sustained rate", round(best_rate, 1), "deliveries/s", "offered rate",
                           target_rate, f">= {target_rate:,.0f} deliveries/s sustained",
                           bool(best and best["rate"] >= target_rate)))  # fmt: skip
    first = loaded[0]
    for what, label in (("metrics", "metrics"), ("clickhouse", "ClickHouse")):
        base = idle["freshness"][what]
        if best is not None:
            m = best["freshness"][what]
            for q in ("p50", "p99", "max"):
                value = m[f"{q}_ms"]
                if value is None:
                    continue
                met = value < TARGET_P99_MS if q == "p99" else None
                rep.add(figures.Figure(f"{label} freshness {q} at the highest sustained rate", round(value), "ms",
                                       f"idle {q}", base[f"{q}_ms"], "p99 < 2,000 ms" if q == "p99" else None,
                                       met))  # fmt: skip
        if first is not best:
            m = first["freshness"][what]
            if m["p99_ms"] is not None:
                rep.add(figures.Figure(f"{label} freshness p99 at {first['rate']:.0f}/s offered", round(m["p99_ms"]),
                                       "ms", "idle p99", base["p99_ms"], "p99 < 2,000 ms",
                                       m["p99_ms"] < TARGET_P99_MS))  # fmt: skip
    rep.add(figures.Figure(f"accepted at {first['rate']:.0f}/s offered",
                           round(first["traffic"]["accepted_per_s"], 1), "deliveries/s",
                           "offered", first["rate"]))  # fmt: skip
    for lv in levels:
        f = lv["freshness"]
        name = "idle" if not lv["rate"] else f"{lv['rate']:.0f}/s"
        rep.notes.append(
            f"{name}: load {lv['load_average']}, CPU cores {lv['cpu_cores']}, samples {f['samples']}, "
            f"metrics p50/p99 {_ms(f['metrics']['p50_ms'])}/{_ms(f['metrics']['p99_ms'])} ms, "
            f"ClickHouse p50/p99 {_ms(f['clickhouse']['p50_ms'])}/{_ms(f['clickhouse']['p99_ms'])} ms"
            + (f", sustained {lv['sustained']}, lag {lv['max_backlog_last_10s']:.0f}" if lv["rate"] else "")
        )
    rep.notes.append(f"/metrics scrape median {result['scrape_ms_median']:.1f} ms every {args.metrics_poll} s; "
                     f"read API polled every {args.poll} s; "
                     f"{args.communities} traffic communities, {args.probes} probe channels")  # fmt: skip
    return rep


def main(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="pulse-bench-e2e-"))
    broker = None
    servers: dict[str, Server] = {}
    try:
        if args.bootstrap:
            bootstrap, broker_pid = args.bootstrap, None
        else:
            print("e2e: starting Kafka ...", file=sys.stderr, flush=True)
            broker = start_broker(workdir)
            bootstrap, broker_pid = broker.bootstrap, broker.pid
        prefix = f"e2e-{uuid.uuid4().hex[:8]}."
        create_topics(bootstrap, prefix)
        secret_values = {k: secrets.token_hex(16) for k in ("github", "discourse", "slack")}
        gw_port, wk_port = free_port(), free_port()
        env = base_env(bootstrap, prefix, workdir / "state",
                       PULSE_GATEWAY_PORT=str(gw_port), PULSE_WORKER_PORT=str(wk_port),
                       PULSE_GITHUB_WEBHOOK_SECRET=secret_values["github"],
                       PULSE_DISCOURSE_WEBHOOK_SECRET=secret_values["discourse"],
                       PULSE_SLACK_SIGNING_SECRET=secret_values["slack"],
                       # one simulated hook sends everything: the per-sender limit would measure itself
                       PULSE_RATE_LIMIT_PER_S="0",
                       # every community (traffic and probes) gets its series
                       PULSE_METRICS_MAX_COMMUNITIES=str(args.communities + args.probes + 100))  # fmt: skip
        servers["gateway"] = start_pulse("gateway", ["gateway"], env, gw_port, workdir / "gateway.log")
        servers["worker"] = start_pulse("worker", ["worker"], env, wk_port, workdir / "worker.log")
        wait_http(servers["gateway"], "/readyz")
        wait_http(servers["worker"], "/healthz")
        result = asyncio.run(measure(args, servers, broker_pid, prefix, secret_values))
    finally:
        for server in servers.values():
            server.stop()
        if broker is not None:
            broker.stop()
        if args.keep:
            print(f"e2e: logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    command = "python bench/e2e_freshness.py " + " ".join(sys.argv[1:])
    rep = report(result, args, command.replace(f" --json {args.json}", "") if args.json else command)
    print("\nend-to-end freshness (gateway 2xx -> visible)")
    for f in rep.figures:
        base = f" (baseline {f.baseline}: {_ms(f.baseline_value)})" if f.baseline else ""
        met = "" if f.met is None else ("  target met" if f.met else "  target MISSED")
        print(f"  {f.name:<55} {f.value:>10,.1f} {f.unit}{base}{met}")
    for note in rep.notes:
        print(f"  - {note}")
    figures.write(args.json, rep)
    return 0


def _rates(value: str) -> list[float]:
    return [float(v) for v in value.split(",") if v.strip()]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=("main", "load"), default="main", help=argparse.SUPPRESS)
    parser.add_argument("--url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--load-rate", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--load-seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--rates", type=_rates, default=_rates("1000,600,300,150"),
                        help="deliveries/s tried in order until one is sustained (default 1000,600,300,150)")
    parser.add_argument("--seconds", type=float, default=40.0, help="measured seconds per rate (default 40)")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of traffic before measuring (default 10)")
    parser.add_argument("--idle-seconds", type=float, default=20.0, help="probes-only baseline (default 20)")
    parser.add_argument("--drain-timeout", type=float, default=120.0, help="most seconds to wait for a backlog")
    parser.add_argument("--communities", type=int, default=50, help="traffic communities (default 50)")
    parser.add_argument("--probes", type=int, default=8, help="probe channels (default 8)")
    parser.add_argument("--gap", type=float, default=5.0,
                        help="most seconds a probe channel pauses between posts, chosen at random (default 5)")
    parser.add_argument("--poll", type=float, default=0.2,
                        help="seconds between read-API requests, for all waiting probes together (default 0.2)")
    parser.add_argument("--metrics-poll", type=float, default=0.25,
                        help="seconds between scrapes of /metrics (default 0.25; a scrape runs on the worker's loop)")
    parser.add_argument("--trend", type=float, default=0.0, metavar="SECONDS",
                        help="for long runs: also print freshness, backlog and CPU for every stretch of SECONDS")
    parser.add_argument("--concurrency", type=int, default=64, help="connections of the load generator")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bootstrap", default=None, help="use this Kafka instead of starting one")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    parser.add_argument("--json", default=None, help="write the figures here (bench/figures.py)")
    ns = parser.parse_args()
    if ns.role == "load":
        print(json.dumps(asyncio.run(load(ns.url, ns.load_rate, ns.load_seconds, ns.communities, ns.seed,
                                          ns.concurrency))))  # fmt: skip
        sys.exit(0)
    sys.exit(main(ns))
