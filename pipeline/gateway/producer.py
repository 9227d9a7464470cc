"""Durable acceptance: a delivery is accepted only once Kafka acknowledged it.

One shared ``KafkaProducer`` (acks='all', idempotent) per gateway process. For
each accepted delivery we write the raw request to ``webhooks.raw`` (body plus
safe headers; signatures and credentials removed) and its canonical events to
``engagement.events`` keyed by ``community_id``, then wait for every
acknowledgement without blocking the event loop: kafka-python's futures
resolve on its sender thread and hand their result to asyncio with
``loop.call_soon_threadsafe``. If the acknowledgements do not arrive within
``produce_timeout_s`` the caller answers 503, never a 2xx for data not stored.

``raw_headers``/``RawDelivery`` are pure; ``KafkaDeliveryProducer`` is the I/O.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from pipeline import topics
from pipeline.config import Settings
from pipeline.events import CanonicalEvent

log = logging.getLogger(__name__)

# Request headers that authenticate a delivery: they must never reach Kafka or logs.
SECRET_HEADERS: frozenset[str] = frozenset(
    {
        "x-hub-signature",
        "x-hub-signature-256",
        "x-discourse-event-signature",
        "x-slack-signature",
        "authorization",
        "proxy-authorization",
        "cookie",
    }
)
# Per-hop transport headers say nothing about the delivery and would not be valid on a replay.
TRANSPORT_HEADERS: frozenset[str] = frozenset(
    {"host", "connection", "content-length", "transfer-encoding", "keep-alive", "accept-encoding"}
)

# Headers the gateway adds to each webhooks.raw record so that replay knows what it was.
H_PLATFORM = "pulse-platform"
H_RECEIVED_AT = "pulse-received-at"
H_SENDER = "pulse-sender"


def is_secret_header(name: str) -> bool:
    lowered = name.lower()
    # GitHub may add new digests (X-Hub-Signature-512 ...): drop the whole family
    return lowered in SECRET_HEADERS or lowered.startswith("x-hub-signature")


def raw_headers(
    headers: Mapping[str, str],
    platform: str,
    received_at: datetime,
    sender: str | None = None,
) -> list[tuple[str, bytes]]:
    """Kafka headers of a raw record: the request's safe headers plus ours, sorted by name."""
    kept = [
        (name.lower(), value.encode("utf-8", "surrogateescape"))
        for name, value in headers.items()
        if not is_secret_header(name)
        and name.lower() not in TRANSPORT_HEADERS
        and not name.lower().startswith("pulse-")  # a client cannot forge our own headers
    ]
    ours = [(H_PLATFORM, platform.encode()), (H_RECEIVED_AT, received_at.isoformat().encode())]
    if sender is not None:
        ours.append((H_SENDER, sender.encode()))
    return sorted(kept) + ours


@dataclass(frozen=True)
class RawDelivery:
    """What goes to webhooks.raw: the exact body bytes and the safe headers."""

    key: bytes | None
    body: bytes
    headers: list[tuple[str, bytes]]


class ProduceUnavailable(Exception):
    """Kafka did not acknowledge in time (or at all): answer 503 and let the sender retry."""

    def __init__(self, reason: str, *, timeout: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.metric_reason = "kafka_timeout" if timeout else "kafka_unavailable"


class DeliveryProducer(Protocol):
    """What the HTTP app needs from the storage side; ``create_app`` takes any of these."""

    async def start(self) -> None: ...

    async def store(self, raw: RawDelivery, events: Sequence[CanonicalEvent]) -> None:
        """Return once Kafka acknowledged everything; raise ``ProduceUnavailable`` otherwise."""
        ...

    async def ready(self) -> bool: ...

    async def close(self) -> None: ...


Record = tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]


def records_for(
    settings: Settings, raw: RawDelivery, events: Iterable[CanonicalEvent]
) -> list[Record]:
    """The Kafka records of one delivery: the raw one first, then one per event."""
    out: list[Record] = [(settings.topic(topics.RAW), raw.key, raw.body, raw.headers)]
    events_topic = settings.topic(topics.EVENTS)
    for event in events:
        out.append((events_topic, event.community_id.encode("utf-8"), event.to_json_bytes(), []))
    return out


def _expire(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_exception(TimeoutError())


class _Inbox:
    """Results handed from another thread to one event loop, with one wake-up per burst."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._items: deque[tuple[asyncio.Future[None], BaseException | None]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def put(self, future: asyncio.Future[None], error: BaseException | None) -> None:
        with self._lock:
            self._items.append((future, error))
            if self._scheduled:
                return
            self._scheduled = True
        self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:  # on the loop
        with self._lock:
            items, self._items = self._items, deque()
            self._scheduled = False
        for future, error in items:
            if future.done():  # timed out (cancelled) or already failed
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)


def _partitioner() -> Any:
    """kafka-python's partitioner for our two kinds of records, with the hashing cached.

    Keyed records (events, key = community_id) go where kafka-python's DefaultPartitioner (murmur2,
    as the Java client) sends them, so replays and other producers agree; the pure-Python hash of
    each key is computed once per partition count. Keyless records (raw deliveries) stick to one
    partition until its batch is sent (KIP-480): kafka-python's default spreads them at random, which
    made every produce request carry a small batch for each of the topic's partitions.
    """
    from kafka.partitioner.sticky import StickyPartitioner

    class CachingStickyPartitioner(StickyPartitioner):
        MAX_KEYS = 100_000

        def __init__(self) -> None:
            super().__init__()
            self._by_key: dict[tuple[str, bytes, int], int] = {}

        def partition(
            self, topic: str, key: Any, serialized_key: bytes | None, value: Any, serialized_value: Any, cluster: Any
        ) -> int:
            if serialized_key is None:
                return int(super().partition(topic, key, serialized_key, value, serialized_value, cluster))
            partitions = cluster.partitions_for_topic(topic)
            if partitions is None:
                raise ValueError(f"Topic {topic} not found in ClusterMetadata")
            cache_key = (topic, serialized_key, len(partitions))
            found = self._by_key.get(cache_key)
            if found is None or found not in partitions:
                found = int(super().partition(topic, key, serialized_key, value, serialized_value, cluster))
                if len(self._by_key) >= self.MAX_KEYS:
                    self._by_key.clear()
                self._by_key[cache_key] = found
            return found

    return CachingStickyPartitioner()


class KafkaDeliveryProducer:
    """The one KafkaProducer of a gateway process, bridged into asyncio."""

    # how long a readiness answer stays valid: /readyz may be polled often
    READY_CACHE_S = 1.0
    READY_PROBE_S = 2.0
    CONNECT_RETRY_S = 1.0

    def __init__(self, settings: Settings, *, linger_ms: int = 5, client_id: str = "pulse-gateway") -> None:
        self._settings = settings
        self._linger_ms = linger_ms
        self._client_id = client_id
        self._producer: Any = None
        self._topics = (settings.topic(topics.RAW), settings.topic(topics.EVENTS))
        # only used when a send may block (topic metadata not known yet), never per request otherwise
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pulse-produce")
        self._connect_task: asyncio.Task[None] | None = None
        self._ready_at = 0.0
        self._ready = False
        self._closed = False
        self._loop_inbox: _Inbox | None = None

    # ------------------------------------------------------------ lifecycle

    def _new_producer(self) -> Any:
        from kafka import KafkaProducer

        timeout_ms = int(self._settings.produce_timeout_s * 1000)
        return KafkaProducer(
            bootstrap_servers=self._settings.kafka_bootstrap.split(","),
            client_id=self._client_id,
            # durable acceptance: every in-sync replica has the record, no duplicates on retry
            acks="all",
            enable_idempotence=True,
            linger_ms=self._linger_ms,
            # raw bodies are KBs: with the 16 KB default each one fills a batch alone, and the
            # per-request cost of kafka-python (pure Python) then dominates; 512 KB stays under
            # the broker's default message.max.bytes (1 MB) and measured 3-4x fewer CPU per delivery
            batch_size=512 * 1024,
            # a raw record holds a whole body (up to max_body_bytes) plus headers
            max_request_size=max(1024 * 1024, self._settings.max_body_bytes + 64 * 1024),
            max_block_ms=timeout_ms,
            # keep retrying after we answered 503: a late success is a harmless duplicate
            # (event ids are stable and the worker dedupes)
            request_timeout_ms=max(timeout_ms, 5000),
            delivery_timeout_ms=120_000,
            reconnect_backoff_max_ms=1000,
            # kafka-python's own sensors cost CPU on every batch and we never read them
            metrics_enabled=False,
            partitioner=_partitioner(),
        )

    async def start(self) -> None:
        """Connect in the background; until then deliveries get 503 and /readyz says no."""
        self._connect_task = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            try:
                producer = await loop.run_in_executor(self._executor, self._new_producer)
            except Exception as exc:  # NoBrokersAvailable and friends: keep trying
                log.warning("kafka not reachable at %s yet (%s); retrying",
                            self._settings.kafka_bootstrap, type(exc).__name__)
                await asyncio.sleep(self.CONNECT_RETRY_S)
                continue
            if self._closed:
                producer.close(timeout=1)
                return
            self._producer = producer
            log.info("connected to kafka at %s", self._settings.kafka_bootstrap)
            # learn the topics' partitions now, so that no request waits for metadata
            for topic in self._topics:
                try:
                    await loop.run_in_executor(self._executor, producer.partitions_for, topic)
                except Exception as exc:
                    log.warning("no metadata for topic %s yet: %s", topic, type(exc).__name__)
            return

    async def close(self) -> None:
        self._closed = True
        if self._connect_task is not None:
            self._connect_task.cancel()
        producer, self._producer = self._producer, None
        if producer is not None:
            await asyncio.get_running_loop().run_in_executor(
                self._executor, lambda: producer.close(timeout=self._settings.produce_timeout_s)
            )
        self._executor.shutdown(wait=False)

    # ------------------------------------------------------------ the hot path

    def _metadata_known(self, producer: Any) -> bool:
        try:
            metadata = producer._metadata
            return all(metadata.partitions_for_topic(t) is not None for t in self._topics)
        except AttributeError:  # another kafka-python layout: take the safe road
            return False

    async def store(self, raw: RawDelivery, events: Sequence[CanonicalEvent]) -> None:
        producer = self._producer
        if producer is None:
            raise ProduceUnavailable("kafka not connected")
        # After a failure, ask Kafka (cached probe) before buffering more: while it is down,
        # retry storms must not pile up bodies in kafka-python's unbounded accumulator.
        if not self._ready and not await self.ready():
            raise ProduceUnavailable("kafka is not answering")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.produce_timeout_s
        records = records_for(self._settings, raw, events)
        done: asyncio.Future[None] = loop.create_future()
        try:
            if self._metadata_known(producer):
                # send() only appends to the accumulator here: it does not block
                self._send_all(producer, records, loop, done)
            else:
                await asyncio.wait_for(
                    loop.run_in_executor(self._executor, self._send_all, producer, records, loop, done),
                    timeout=max(deadline - loop.time(), 0.001),
                )
            # one timer instead of asyncio.wait_for: this runs for every delivery
            timer = loop.call_at(deadline, _expire, done)
            try:
                await done
            finally:
                timer.cancel()
        except TimeoutError:
            self._mark(False)
            raise ProduceUnavailable("kafka did not acknowledge in time", timeout=True) from None
        except ProduceUnavailable:
            self._mark(False)
            raise
        except Exception as exc:  # a send() that raised (closed producer, metadata timeout ...)
            self._mark(False)
            raise ProduceUnavailable(f"kafka error: {type(exc).__name__}") from None
        self._mark(True)

    def _send_all(
        self, producer: Any, records: list[Record], loop: asyncio.AbstractEventLoop, done: asyncio.Future[None]
    ) -> None:
        # Acknowledgements arrive on kafka-python's sender thread. Count them down there and
        # hand the loop one result per delivery, through a coalescing inbox: under load one
        # wake-up of the loop resolves many deliveries.
        inbox = self._inbox(loop)
        pending = [len(records)]
        lock = threading.Lock()

        def on_success(_metadata: object) -> None:
            with lock:
                pending[0] -= 1
                last = pending[0] == 0
            if last:
                inbox.put(done, None)

        def on_error(exc: BaseException) -> None:
            inbox.put(done, ProduceUnavailable(f"kafka error: {type(exc).__name__}"))

        for topic, key, value, headers in records:
            future = producer.send(topic, value=value, key=key, headers=headers)
            future.add_callback(on_success)
            future.add_errback(on_error)

    def _inbox(self, loop: asyncio.AbstractEventLoop) -> _Inbox:
        if self._loop_inbox is None or self._loop_inbox.loop is not loop:
            self._loop_inbox = _Inbox(loop)
        return self._loop_inbox

    # ------------------------------------------------------------ readiness

    def _mark(self, ok: bool) -> None:
        self._ready, self._ready_at = ok, time.monotonic()

    async def ready(self) -> bool:
        """True while Kafka answers: a metadata round trip, cached for a second."""
        producer = self._producer
        if producer is None:
            return False
        if time.monotonic() - self._ready_at < self.READY_CACHE_S:
            return self._ready
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[bool] = loop.create_future()

        def resolve(ok: bool) -> None:
            if not answered.done():
                answered.set_result(ok)

        try:
            update = producer._metadata.request_update()
            update.add_callback(lambda _v: loop.call_soon_threadsafe(resolve, True))
            update.add_errback(lambda _e: loop.call_soon_threadsafe(resolve, False))
            producer._sender.wakeup()
            ok = await asyncio.wait_for(answered, timeout=self.READY_PROBE_S)
        except (TimeoutError, AttributeError):
            ok = False
        self._mark(ok)
        return ok
