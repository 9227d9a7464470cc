"""Post requests to a gateway: bounded concurrency, optional rate, polite retries.

Used by ``pulse simulate`` and ``pulse replay``. Requests go out in the order
given (``concurrency`` of them in flight). A 429 or 503 is retried after the
``Retry-After`` the gateway sent (capped), a connection error after an
exponential backoff; any other answer is final. ``prepare`` runs before every
attempt, so a Slack request can be signed again with the current time (its
signature is only valid for 5 minutes). Progress goes to stderr about once a
second; the returned ``Summary`` counts sent, accepted, ignored and refused by reason.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TextIO

import httpx

from pipeline.simulate.model import Request

RETRY_STATUSES = frozenset({429, 503})


@dataclass
class Summary:
    total: int | None = None
    sent: int = 0  # requests that got a final answer (or gave up)
    accepted: int = 0  # 2xx with events
    ignored: Counter[str] = field(default_factory=Counter)  # 2xx without events, by reason
    challenges: int = 0  # Slack url_verification answers
    events: int = 0  # canonical events the gateway reported accepting
    refused: Counter[str] = field(default_factory=Counter)  # "401 signature check failed", ...
    retries: int = 0
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.refused

    def format(self) -> str:
        rate = self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0
        lines = [
            f"sent {self.sent} requests in {self.elapsed_s:.1f} s ({rate:.0f}/s), {self.retries} retries",
            f"  accepted {self.accepted} ({self.events} events)",
            f"  ignored  {sum(self.ignored.values())}"
            + (" (" + ", ".join(f"{r}: {n}" for r, n in self.ignored.most_common()) + ")" if self.ignored else ""),
        ]
        if self.challenges:
            lines.append(f"  challenges answered {self.challenges}")
        lines.append(f"  refused  {sum(self.refused.values())}")
        lines += [f"    {n:6d}  {reason}" for reason, n in self.refused.most_common()]
        return "\n".join(lines)


def retry_after_s(value: str | None, fallback: float) -> float:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return fallback
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return fallback


def _reason(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        data = None
    label = data.get("error") if isinstance(data, dict) else None
    return f"{response.status_code} {label or response.reason_phrase or 'error'}"[:120]


class _Pacer:
    """At most ``rate`` starts a second across all workers."""

    def __init__(self, rate: float | None, sleep: Callable[[float], Awaitable[None]]) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.next = time.monotonic()
        self.sleep = sleep

    async def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        slot = max(now, self.next)
        self.next = slot + self.interval  # no await in between: the event loop makes this atomic
        if slot > now:
            await self.sleep(slot - now)


async def send_async(
    requests: Iterable[Request],
    base_url: str,
    *,
    concurrency: int = 8,
    rate: float | None = None,
    max_retries: int = 5,
    max_retry_after_s: float = 60.0,
    prepare: Callable[[Request], Request] | None = None,
    progress: TextIO | None = sys.stderr,
    timeout_s: float = 10.0,
    transport: httpx.AsyncBaseTransport | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Summary:
    # one INFO line per request from httpx would drown the progress line
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger("httpx").level))
    items = list(requests)
    summary = Summary(total=len(items))
    pacer = _Pacer(rate, sleep)
    queue: asyncio.Queue[Request] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    started = time.monotonic()
    last_report = [started]

    def report(final: bool = False) -> None:
        now = time.monotonic()
        if progress is None or (not final and now - last_report[0] < 1.0):
            return
        last_report[0] = now
        print(
            f"pulse: sent {summary.sent}/{summary.total} accepted {summary.accepted} "
            f"ignored {sum(summary.ignored.values())} refused {sum(summary.refused.values())} "
            f"retries {summary.retries}",
            file=progress,
            flush=True,
        )

    async def one(client: httpx.AsyncClient, request: Request) -> None:
        for attempt in range(max_retries + 1):
            await pacer.wait()
            ready = prepare(request) if prepare else request
            backoff = min(0.25 * 2**attempt, 10.0)
            try:
                response = await client.post(ready.path, content=ready.body, headers=ready.headers)
            except httpx.TransportError as exc:
                if attempt < max_retries:
                    summary.retries += 1
                    await sleep(backoff)
                    continue
                summary.refused[f"connection failed ({type(exc).__name__})"] += 1
                return
            if response.status_code in RETRY_STATUSES and attempt < max_retries:
                summary.retries += 1
                wait = retry_after_s(response.headers.get("retry-after"), backoff)
                await sleep(min(wait, max_retry_after_s))
                continue
            _count(summary, response)
            return

    async def worker(client: httpx.AsyncClient) -> None:
        while True:
            try:
                request = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await one(client, request)
            summary.sent += 1
            report()

    async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s, transport=transport) as client:
        await asyncio.gather(*(worker(client) for _ in range(max(1, concurrency))))
    summary.elapsed_s = time.monotonic() - started
    report(final=True)
    return summary


def _count(summary: Summary, response: httpx.Response) -> None:
    if not response.is_success:
        summary.refused[_reason(response)] += 1
        return
    try:
        data = response.json()
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    if "challenge" in data:
        summary.challenges += 1
    elif data.get("status") == "ignored":
        summary.ignored[str(data.get("reason") or "unknown")[:80]] += 1
    else:
        summary.accepted += 1
        events = data.get("events")
        summary.events += events if isinstance(events, int) else 0


def send(requests: Iterable[Request], base_url: str, **options: object) -> Summary:
    """Blocking wrapper of ``send_async`` (same options)."""
    return asyncio.run(send_async(requests, base_url, **options))  # type: ignore[arg-type]
