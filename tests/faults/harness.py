"""Shared pieces of the fault suite: processes, a retrying load, what landed, the report.

* ``GatewayProcess``: ``pulse gateway`` as a subprocess on a fixed 127.0.0.1 port (so a
  restarted gateway is found again at the same address), stopped by pid.
* ``Load``: sends batches of canonical events to ``POST /v1/events`` from a few threads,
  retrying 429/503 and connection errors like a platform would, and records exactly which
  events got a 2xx answer ("accepted").
* ``fault_events``: small, distinct communities per fault, event times in one past
  6-hour span, and a sentinel reaction per community two days later that makes every
  hourly window of the span final (a reaction moves no post counts).
* ``landed``: per community, the sums of threads/replies/posts over final hourly windows
  in ClickHouse (``window_results FINAL``) and the count of stored canonical events.
* ``record``: the measured figures of one fault as JSON under ``RELIABILITY_REPORT_DIR``
  (not a ``PULSE_`` name: ``pipeline.config`` refuses unknown ``PULSE_*`` variables).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from kafka import KafkaConsumer, TopicPartition

from pipeline.stack.process import terminate

REPORT_ENV = "RELIABILITY_REPORT_DIR"
TOKEN_SENDER = "tester"
HOUR_MS = 3_600_000
START_TIMEOUT_S = 60.0


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (Linux /proc), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


# ------------------------------------------------------------------ the gateway process


@dataclass
class GatewayProcess:
    env: dict[str, str]
    port: int
    log_file: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        self.starts += 1
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pipeline.cli", "gateway"],
                env={**self.env, "PULSE_GATEWAY_PORT": str(self.port)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.log_tail()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            time.sleep(0.2)
        raise AssertionError(f"gateway not ready after {timeout} s:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        if sig == signal.SIGTERM:
            terminate(self.process.pid, timeout, self.process)
        else:
            self.process.send_signal(sig)
            self.process.wait(timeout)

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"


# ------------------------------------------------------------------ events


@dataclass
class FaultEvents:
    tag: str
    communities: list[str]
    batches: list[list[dict[str, Any]]]  # the requests' bodies
    sentinels: list[dict[str, Any]]
    base_ms: int

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for b in self.batches for e in b]


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def event(tag: str, community: str, n: int, occurred_ms: int, *, reply_to: str | None = None,
          kind: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": f"{tag}-{community}-{n}",
        "platform": "faults",
        "space_id": "faults",
        "community_id": community,
        "kind": kind or ("reply" if reply_to else "thread_started"),
        "actor_id": f"u{n % 7}",
        "actor_type": "human",
        "thread_id": reply_to or f"{tag}-{community}-t{n}",
        "occurred_at": iso(occurred_ms),
    }
    if reply_to:
        body["parent_id"] = reply_to
    return body


def fault_events(tag: str, *, communities: int = 4, per_community: int = 60, batch: int = 5,
                 seed: int = 1) -> FaultEvents:
    """Threads and replies over one 6-hour span five days ago, shuffled into batches."""
    rng = random.Random(seed)
    tag = f"{tag}-{uuid.uuid4().hex[:6]}"
    now_ms = int(time.time() * 1000)
    base_ms = (now_ms // HOUR_MS) * HOUR_MS - 5 * 24 * HOUR_MS
    names = [f"{tag}-c{i}" for i in range(communities)]
    events: list[dict[str, Any]] = []
    for community in names:
        threads: list[str] = []
        for n in range(per_community):
            at = base_ms + rng.randrange(6 * HOUR_MS)
            if threads and rng.random() < 0.6:
                events.append(event(tag, community, n, at, reply_to=rng.choice(threads)))
            else:
                events.append(event(tag, community, n, at))
                threads.append(events[-1]["thread_id"])
    rng.shuffle(events)  # out of order within the span (well inside max lateness)
    batches = [events[i : i + batch] for i in range(0, len(events), batch)]
    sentinel_at = base_ms + 2 * 24 * HOUR_MS
    sentinels = [event(tag, c, 10_000, sentinel_at, kind="reaction") for c in names]
    return FaultEvents(tag, names, batches, sentinels, base_ms)


def expected_counts(events: Iterable[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per community: threads, replies and posts of distinct events (by event_id)."""
    seen: dict[str, dict[str, Any]] = {e["event_id"]: e for e in events}
    out: dict[str, dict[str, int]] = {}
    for e in seen.values():
        c = out.setdefault(e["community_id"], {"threads_started": 0, "replies": 0, "posts": 0})
        if e["kind"] == "thread_started":
            c["threads_started"] += 1
            c["posts"] += 1
        elif e["kind"] == "reply":
            c["replies"] += 1
            c["posts"] += 1
    return out


# ------------------------------------------------------------------ the load


RETRY = frozenset({429, 503})


@dataclass
class Load:
    """Posts every batch until it gets a 2xx (or the deadline passes), from ``threads`` threads."""

    url: Callable[[], str]
    token: str
    batches: list[list[dict[str, Any]]]
    threads: int = 4
    pace_s: float = 0.0  # pause after each request per thread, to make the load last
    deadline_s: float = 180.0
    accepted: list[dict[str, Any]] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    refused: list[str] = field(default_factory=list)
    retries: int = 0
    first_2xx_after: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)
    _marks: dict[str, float] = field(default_factory=dict)
    _queue: queue.Queue[list[dict[str, Any]]] = field(default_factory=queue.Queue)

    def start(self) -> Load:
        for b in self.batches:
            self._queue.put(b)
        self._until = time.monotonic() + self.deadline_s
        for i in range(self.threads):
            t = threading.Thread(target=self._run, name=f"load-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def mark(self, name: str) -> None:
        """Remember now: the first 2xx after it is reported as first_2xx_after[name] seconds."""
        with self._lock:
            self._marks[name] = time.monotonic()

    def done_fraction(self) -> float:
        with self._lock:
            return sum(1 for _ in self.accepted) / max(1, sum(len(b) for b in self.batches))

    def wait_accepted(self, fraction: float, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.done_fraction() < fraction:
            assert time.monotonic() < deadline, f"load stuck at {self.done_fraction():.0%}: {self.summary()}"
            time.sleep(0.05)

    def join(self) -> Load:
        for t in self._threads:
            t.join(max(1.0, self._until - time.monotonic() + 30))
        assert not any(t.is_alive() for t in self._threads), "load threads did not finish"
        return self

    def summary(self) -> dict[str, Any]:
        return {
            "requests_2xx": sum(n for s, n in self.statuses.items() if 200 <= s < 300),
            "http_503": self.statuses.get(503, 0),
            "http_429": self.statuses.get(429, 0),
            "connection_errors": sum(self.errors.values()),
            "retries": self.retries,
            "refused": list(self.refused),
        }

    def _run(self) -> None:
        headers = {"authorization": f"Bearer {self.token}"}
        with httpx.Client(timeout=30) as client:
            while True:
                try:
                    batch = self._queue.get_nowait()
                except queue.Empty:
                    return
                self._send(client, batch, headers)
                if self.pace_s:
                    time.sleep(self.pace_s)

    def _send(self, client: httpx.Client, batch: list[dict[str, Any]], headers: dict[str, str]) -> None:
        backoff = 0.1
        while time.monotonic() < self._until:
            try:
                response = client.post(self.url() + "/v1/events", json=batch, headers=headers)
            except httpx.TransportError as exc:  # refused, reset, or no answer: unknown, so retry
                with self._lock:
                    self.errors[type(exc).__name__] += 1
                    self.retries += 1
                time.sleep(backoff)
                backoff = min(1.0, backoff * 2)
                continue
            with self._lock:
                self.statuses[response.status_code] += 1
            if 200 <= response.status_code < 300:
                now = time.monotonic()
                with self._lock:
                    self.accepted.extend(batch)
                    for name, at in self._marks.items():
                        if name not in self.first_2xx_after and now >= at:
                            self.first_2xx_after[name] = round(now - at, 2)
                return
            if response.status_code in RETRY:
                with self._lock:
                    self.retries += 1
                wait = float(response.headers.get("retry-after", "1") or 1)
                time.sleep(min(wait, 1.0))  # capped: the suite keeps its time budget
                continue
            with self._lock:
                self.refused.append(f"{response.status_code} {response.text[:200]}")
            return
        with self._lock:
            self.refused.append("gave up: deadline passed")


# ------------------------------------------------------------------ what landed


def landed(client: Any, communities: list[str]) -> dict[str, dict[str, int]]:
    """Sums over the final hourly windows stored in ClickHouse, per community."""
    rows = client.query(
        """
        SELECT community_id, sum(threads_started), sum(replies), sum(posts)
        FROM window_results FINAL
        WHERE window = '1h' AND final AND community_id IN {ids:Array(String)}
        GROUP BY community_id
        """,
        parameters={"ids": communities},
    ).result_rows
    return {r[0]: {"threads_started": int(r[1]), "replies": int(r[2]), "posts": int(r[3])} for r in rows}


def stored_events(client: Any, communities: list[str]) -> tuple[int, int]:
    """(rows, distinct event ids) of canonical events stored for these communities."""
    row = client.query(
        "SELECT count(), uniqExact(event_id) FROM events FINAL WHERE community_id IN {ids:Array(String)}",
        parameters={"ids": communities},
    ).result_rows[0]
    return int(row[0]), int(row[1])


def wait_landed(client: Any, expected: dict[str, dict[str, int]], timeout: float = 120.0) -> tuple[
    dict[str, dict[str, int]], float
]:
    """Poll ClickHouse until the final windows sum to ``expected`` (or time runs out).

    Returns what was found and the monotonic time it was first found complete."""
    deadline = time.monotonic() + timeout
    got: dict[str, dict[str, int]] = {}
    while time.monotonic() < deadline:
        got = landed(client, sorted(expected))
        if got == expected:
            break
        time.sleep(0.5)
    return got, time.monotonic()


def topic_records(bootstrap: str, topic: str, *, idle_s: float = 2.0) -> list[Any]:
    """Every record of a topic from the beginning (until none came for ``idle_s``)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             consumer_timeout_ms=int(idle_s * 1000))
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        return list(consumer)
    finally:
        consumer.close()


def count_records(records: Iterable[Any], communities: set[str]) -> tuple[int, int]:
    """(records, distinct event ids) of the events topic for these communities."""
    ids = []
    for r in records:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            body = json.loads(r.value)
            if body["community_id"] in communities:
                ids.append(body["event_id"])
    return len(ids), len(set(ids))


def totals(counts: dict[str, dict[str, int]]) -> dict[str, int]:
    keys = ("threads_started", "replies", "posts")
    return {k: sum(c.get(k, 0) for c in counts.values()) for k in keys}


# ------------------------------------------------------------------ the report


def record(fault: str, **figures: Any) -> None:
    """Write one fault's measured figures to $RELIABILITY_REPORT_DIR/<fault>.json (when set)."""
    target = os.environ.get(REPORT_ENV)
    if not target:
        return
    path = Path(target)
    path.mkdir(parents=True, exist_ok=True)
    figures = {"fault": fault, "measured_at": datetime.now(UTC).isoformat(timespec="seconds"), **figures}
    (path / f"{fault}.json").write_text(json.dumps(figures, indent=2, sort_keys=True, default=str))


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of one metric whose labels include ``labels`` (0 if none)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        if series.split("{", 1)[0] != name:
            continue
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
    return total


def day_ago_ms(days: float) -> int:
    return int((datetime.now(UTC) - timedelta(days=days)).timestamp() * 1000)
