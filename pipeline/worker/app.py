"""The Faust application: wiring only.

One agent consumes ``engagement.events`` and ``engagement.ticks`` (both keyed by
community, same partition count), hands every message to ``Processor`` and
sends what it returns. Community state lives in the RocksDB-backed Faust table
``community-state`` (changelog partitioned like the source), so a restarted or
rebalanced worker resumes exactly where the changelog says. A timer puts one
tick per owned partition on ``engagement.ticks`` so idle communities close
their windows and turn dead in order with the events of their partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from dataclasses import replace
from functools import partial
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, EventT
from prometheus_client import CollectorRegistry

from pipeline import topics
from pipeline.communities import load_directory
from pipeline.config import Settings
from pipeline.core.state import is_page_key
from pipeline.metrics import WorkerMetrics
from pipeline.worker.processing import (
    EMIT_ON_FLUSH,
    PartitionProgress,
    Processor,
    StepResult,
    Unprocessable,
    decode_tick,
    encode_tick,
    partition_for,
    tail_stalls,
    write_saves,
)

log = logging.getLogger(__name__)

TICK_INTERVAL_S = 5.0
# a partition's applied events are flushed (windows emitted, health shown) after this many
# events or this long, whichever comes first; their state is saved and their offsets
# acknowledged at a flush at least SAVE_INTERVAL_S after the first unsaved event (or after
# FLUSH_EVENTS unsaved events). A save writes each changed community's state record (and the
# pages a busy one changed, pipeline.core.state): in live traffic, where most events are the
# only one of their community in a flush, saving at every flush cost about one state write per
# event. A crash re-applies at most this much.
FLUSH_EVENTS = 2000
# 0.25 s, like the sink's batch age: every flush emits each changed community's windows, and
# at 300/s the two at 0.25 s cost the worker up to 0.08 of a core more than at 0.5 s, for about
# 0.2 s off the p99 to metrics and 0.4-0.6 s to ClickHouse (bench/notes/e2e.md)
FLUSH_INTERVAL_S = 0.25
# how often partitions with no traffic are looked at for a flush they owe
FLUSH_REQUEST_INTERVAL_S = 0.1
SAVE_INTERVAL_S = 5.0
METRICS_INTERVAL_S = 5.0
# how long fetching events the consumer skipped may take; past it the step fails with
# TimeoutError, and nothing of it is saved or acknowledged
SKIPPED_FETCH_TIMEOUT_S = 30.0
# table recovery that has received nothing from a changelog partition for this long, while
# its consumer is already past what recovery still needs, is stuck: seek the partition back
RECOVERY_STALL_S = 15.0
# a partition whose processing has stopped short of its highwater for this long, while the
# consumer has fetched up to it, had its last events dropped: they are read back from Kafka
TAIL_STALL_S = 10.0
# after SIGTERM/SIGINT, how long Faust may take to stop before the process ends anyway: without a
# broker its consumer thread can die on the way down and its stop then waits forever; what was
# not acknowledged is processed again after a restart, so ending is safe
SHUTDOWN_TIMEOUT_S = 20.0


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Faust hard-codes fetch_max_wait_ms=1500 (no setting); the consumer reads it at start
        consumer._fetch_max_wait_ms = topics.CONSUMER_FETCH_WAIT_MS
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class _App(faust.App):
    """Faust's app on a Kafka transport whose consumer does not hold a fetch for 1.5 s."""

    def _new_transport(self) -> faust_aiokafka.Transport:
        return _Transport(self.conf.broker_consumer, self)


def processed_offset(processed_next: int | None, committed: int | None) -> int | None:
    """Offset up to which a partition's events are done here: after the last one this worker
    handled, or the group's committed offset if further (a new owner starts from it); None
    while neither is known. Committed never runs ahead of processing."""
    known = [x for x in (processed_next, committed) if x is not None and x >= 0]
    return max(known) if known else None


def _now_ms() -> int:
    return int(time.time() * 1000)


class PulseWorker:
    """Builds the Faust app for one configuration and keeps the worker's shell state."""

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry or CollectorRegistry()
        self.metrics = WorkerMetrics(self.registry, settings.metrics_max_communities)
        self.app = _App(
            settings.topic("pulse-worker"),
            broker=[f"kafka://{server}" for server in settings.kafka_bootstrap.split(",")],
            store="rocksdb://",
            datadir=str(settings.state_dir / "worker"),
            web_host=settings.worker_host,
            web_bind=settings.worker_host,
            web_port=settings.worker_port,
            topic_partitions=topics.EVENT_PARTITIONS,
            topic_allow_declare=True,
            topic_disable_leader=True,
            producer_acks=-1,
            # output rows, health and changelog records are sent in bursts at each flush: let
            # them share produce requests (one request per record cost a third of the CPU)
            producer_linger=0.005,
            producer_max_batch_size=256 * 1024,
            producer_max_request_size=topics.STATE_RECORD_MAX_BYTES,
            key_serializer="raw",
            value_serializer="raw",
            consumer_auto_offset_reset="earliest",
            broker_commit_every=1000,
            # a killed worker's partitions move on after this, not after Faust's 60 s default
            broker_session_timeout=10.0,
            # events are acknowledged only at their partition's flush; a rebalance or shutdown
            # must not wait for that (it would wait out the rebalance timeout): what is not
            # acknowledged is simply processed again by the partition's next owner
            stream_wait_empty=False,
            broker_heartbeat_interval=3.0,
            broker_commit_interval=1.0,
            table_standby_replicas=0,
            web_enabled=True,
        )
        self.table = self.app.Table(
            "community-state",
            partitions=topics.EVENT_PARTITIONS,
            key_type=bytes,
            value_type=bytes,
            # a community's head record can be large (see topics.STATE_MAX_BYTES)
            extra_topic_configs={"max.message.bytes": str(topics.STATE_RECORD_MAX_BYTES)},
        )
        self.processor = Processor(
            load_directory(settings.communities_file),
            load=self._load_state,
            partitions=topics.EVENT_PARTITIONS,
            windows=replace(EMIT_ON_FLUSH, idle_after_ms=settings.stream_idle_s * 1000),
        )
        self._scanned: set[int] = set()
        self._processed_next: dict[int, int] = {}  # events partition -> offset after the last one handled
        # events applied but not yet saved (nor acknowledged), per partition, and since when
        self._pending: dict[int, list[EventT]] = {}
        self._pending_since: dict[int, int] = {}  # first event not flushed yet
        self._unsaved_since: dict[int, int] = {}  # first event not saved yet
        self._flush_requested: set[int] = set()
        # how often each partition was revoked: a step that waited on Kafka across a
        # revocation must not save or acknowledge (see _revoked_since)
        self._revocations: dict[int, int] = {}
        self._recovery_checked: dict[TP, float] = {}  # changelog partition -> when a stall was handled
        self._tail_stalled: dict[int, tuple[int | None, float]] = {}  # see tail_stalls
        self._lag_exported: set[int] = set()  # partitions with a consumer-lag series
        self._gauges_revision = -1  # the processor's health_revision last shown in the gauges
        self._topic = {
            name: self.app.topic(settings.topic(name), key_type=bytes, value_type=bytes, partitions=None)
            for name in (
                topics.EVENTS,
                topics.TICKS,
                topics.WINDOWS,
                topics.FIRST_RESPONSES,
                topics.HEALTH,
                topics.DEAD_LETTER,
            )
        }
        self._topic_names = {name: settings.topic(name) for name in self._topic}
        # output sends not yet awaited, per events partition: awaited before its next save
        self._unconfirmed: dict[int, list[Any]] = {}
        self._requests: set[asyncio.Future[Any]] = set()  # flush requests being sent
        self._source = self.app.topic(
            settings.topic(topics.EVENTS),
            settings.topic(topics.TICKS),
            key_type=bytes,
            value_type=bytes,
        )
        self._wire()
        self._ack_current_generation_only()

    def _ack_current_generation_only(self) -> None:
        """Let only messages of the consumer's current generation be acknowledged.

        Faust's stream acknowledges a message it skips as stale (fetched before a rebalance) as
        if it had been processed. After the rebalance the same events come again from the
        committed offset and are applied, but only saved at the partition's next saving flush; the
        stale acknowledgements can meanwhile let Faust commit past them, and a second rebalance
        before that flush would lose them. (Suspected, not proven, for a loss seen in
        test_workers_joining_and_leaving_mid_stream_lose_nothing; that loss recurred once with
        this in place.) This worker acknowledges events only at a flush of the current
        generation (a step across a revocation acknowledges nothing), so nothing of ours is refused.
        """
        app = self.app
        consumer: Any = app.consumer
        faust_ack = consumer.ack

        def ack(message: Any) -> bool:
            if message.generation_id != app.consumer_generation_id:
                return False
            return bool(faust_ack(message))

        consumer.ack = ack

    # -- state table ------------------------------------------------------------

    def _load_state(self, key: bytes) -> bytes | None:
        value: bytes | None = self.table.get(key)
        return value

    def _adopt_partition(self, partition: int) -> None:
        """After start or rebalance: find the communities of a partition in the table."""
        if partition in self._scanned:
            return
        self._scanned.add(partition)
        keys = [k.decode() for k in self.table if not is_page_key(k)]  # a community's head, not its pages
        self.processor.adopt(k for k in keys if partition_for(k, topics.EVENT_PARTITIONS) == partition)

    def _owned(self) -> list[TP]:
        """The engagement.events partitions this worker actively owns right now."""
        events = self.settings.topic(topics.EVENTS)
        return [tp for tp in self.app.assignor.assigned_actives() if tp.topic == events]

    def owned_partitions(self) -> set[int]:
        return {tp.partition for tp in self._owned()}

    # -- wiring -----------------------------------------------------------------

    def _wire(self) -> None:
        app = self.app
        ticks_name = self.settings.topic(topics.TICKS)

        @app.agent(self._source, name="engagement")
        async def engagement(stream: Any) -> None:
            # acknowledged by hand: an event counts as done (its offset may be committed)
            # only once the state it changed is saved, at a saving flush of its partition
            manual = stream.noack()
            async for event in manual.events():
                await self._handle(event, manual, is_tick=event.message.topic == ticks_name)

        @app.timer(interval=FLUSH_REQUEST_INTERVAL_S)
        async def request_flushes() -> None:
            # a partition with applied but unflushed events and no traffic to carry the flush:
            # such events wait one flush interval plus up to one of these, not up to two
            # likewise a partition owing a save whose traffic stopped (or that only the tick changed)
            wall_ms = _now_ms()
            owing = [p for p in self._pending_since.items() if wall_ms - p[1] >= FLUSH_INTERVAL_S * 1000]
            owing += [p for p in self._unsaved_since.items() if self._save_due(p[0], wall_ms)]
            for partition, _ in owing:
                if partition not in self._flush_requested:
                    self._flush_requested.add(partition)
                    # sent in the background: a timer run that waits on a busy loop makes mode
                    # log "overlapping" (tens of times in 5 minutes at 1,000/s)
                    send = self._topic[topics.TICKS].send(
                        key=None, value=encode_tick(wall_ms, advance=False), partition=partition
                    )
                    task = asyncio.ensure_future(send)
                    self._requests.add(task)
                    task.add_done_callback(partial(self._flush_request_sent, partition))

        @app.timer(interval=TICK_INTERVAL_S)
        async def tick() -> None:
            wall_ms = _now_ms()
            progress = await self._progress() or {}  # no answer, no tick: idle advancing waits for Kafka
            for partition, p in sorted(progress.items()):
                if p.processed is not None and p.processed >= p.highwater:
                    await self._topic[topics.TICKS].send(key=None, value=encode_tick(wall_ms), partition=partition)
            if progress and not self._in_recovery():  # paused partitions do not move: not a stall
                stalls = tail_stalls(progress, self._tail_stalled, time.monotonic(), TAIL_STALL_S)
                for partition, highwater in sorted(stalls.items()):
                    log.warning(
                        "%s[%d]: processed up to %s, fetched up to %s of %d for %.0f s: reading the rest from Kafka",
                        self._topic_names[topics.EVENTS],
                        partition,
                        progress[partition].processed,
                        progress[partition].position,
                        highwater,
                        TAIL_STALL_S,
                    )
                    await self._topic[topics.TICKS].send(
                        key=None, value=encode_tick(wall_ms, advance=False, catch_up_to=highwater), partition=partition
                    )

        @app.timer(interval=METRICS_INTERVAL_S)
        async def export_metrics() -> None:
            self._refresh_community_gauges()
            await self._export_lag()

        @app.timer(interval=TICK_INTERVAL_S)
        async def watch_recovery() -> None:
            try:
                await self._unstick_recovery()
            except Exception as exc:  # a rebalance moved the partition meanwhile: next round
                log.warning("checking table recovery failed: %s: %s", type(exc).__name__, exc)

        def on_revoked(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
            revoked: set[TP] = args[0] if args else kwargs.get("revoked", set())
            events = self.settings.topic(topics.EVENTS)
            parts = {tp.partition for tp in revoked if tp.topic == events}
            self.processor.forget_partitions(parts)
            self._scanned -= parts
            for part in parts:
                self._revocations[part] = self._revocations.get(part, 0) + 1
                self._processed_next.pop(part, None)
                self._tail_stalled.pop(part, None)
                self._take_pending(part)  # never acknowledged: the next owner processes them again
                self._unconfirmed.pop(part, None)
                # a worker exports only what it owns
                with contextlib.suppress(KeyError):
                    self.metrics.consumer_lag.remove(events, str(part))

        app.on_partitions_revoked.connect(on_revoked)  # type: ignore[arg-type]  # mode types the sender positional-only

        @app.page("/metrics")
        async def metrics_page(web: Any, request: Any) -> Any:
            # aiohttp refuses a charset inside content_type; the exposition format is UTF-8 anyway
            # at scrape time, as a collector would: a flush shows at the next scrape, not
            # only at the next export tick (that wait was most of /metrics' freshness)
            self._refresh_community_gauges()
            # ?name[]=...: only those series (Prometheus' parameter), for a client polling a few
            names = request.rel_url.query.getall("name[]", None)
            return web.bytes(self.metrics.exposition(names), content_type="text/plain; version=0.0.4")

        @app.page("/healthz")
        async def healthz(web: Any, request: Any) -> Any:
            return web.json({"status": "ok"})

        self._agent = engagement

    def _flush_request_sent(self, partition: int, task: asyncio.Future[Any]) -> None:
        self._requests.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # the partition's 5 s tick flushes it anyway; the next look may ask again
            self._flush_requested.discard(partition)
            log.warning("asking partition %d for a flush failed: %s", partition, task.exception())

    def _refresh_community_gauges(self) -> None:
        """Per-community gauges from the processor's health, when it may have changed."""
        revision = self.processor.health_revision
        if revision != self._gauges_revision:
            self.metrics.communities.update(self.processor.current_health())
            self._gauges_revision = revision

    async def _progress(self) -> dict[int, PartitionProgress] | None:
        """Processed offset, fetch position and highwater of each owned partition; None when Kafka
        does not answer (the tick, the tail-stall check and the lag gauge all read it).

        Only a caught-up partition (processed up to its highwater) may tick: idle communities
        advance with the wall clock, so a tick must never overtake events still waiting in
        Kafka (a backlog after a restart, a busy neighbour); otherwise those events would look
        late. Progress is the offset after the last event processed here, or the group's
        committed offset, whichever is further (committed never runs ahead of processing).
        """
        consumer = self.app.consumer
        owned = self._owned()
        if not owned:
            return {}
        try:
            highwaters = await asyncio.wait_for(consumer.highwaters(*owned), timeout=TICK_INTERVAL_S)
            positions = {tp: await consumer.position(tp) for tp in owned}
        except Exception as exc:
            log.warning("Kafka did not answer the highwater and position query: %s", type(exc).__name__)
            return None
        return {
            tp.partition: PartitionProgress(self._processed_through(tp), positions.get(tp), highwaters[tp])
            for tp in owned
            if tp in highwaters
        }

    def _in_recovery(self) -> bool:
        return bool(getattr(self.app.tables, "recovery", None) and self.app.tables.recovery.in_recovery)  # type: ignore[attr-defined]

    def _processed_through(self, tp: TP) -> int | None:
        """``processed_offset`` of an owned partition: this worker's progress or the group's commit."""
        committed = getattr(self.app.consumer, "_committed_offset", {})
        return processed_offset(self._processed_next.get(tp.partition), committed.get(tp))

    async def _export_lag(self) -> None:
        """Events not yet processed per owned partition, and whether Kafka answers at all.

        Counted from what is processed (as ``_progress`` does), not from the fetch
        position, which runs ahead of processing by whatever is prefetched: an alert on the
        backlog must see the events still waiting in the worker's buffers too. The fetch
        position serves only before anything is processed or committed (a new group).
        """
        events = self.settings.topic(topics.EVENTS)
        owned = self.owned_partitions()
        progress = await self._progress()
        if progress is None:  # any failure to reach the cluster is what kafka_up reports
            self.metrics.kafka_up.set(0)
            return
        self.metrics.kafka_up.set(1)
        # a rebalance may have happened while we waited: export only what we own now
        still_owned = self.owned_partitions()
        for partition, p in progress.items():
            done = p.processed if p.processed is not None else p.position
            if partition in still_owned and done is not None:
                self.metrics.consumer_lag.labels(topic=events, partition=str(partition)).set(max(0, p.highwater - done))
        for part in self._lag_exported - still_owned:
            with contextlib.suppress(KeyError):
                self.metrics.consumer_lag.remove(events, str(part))
        self._lag_exported = owned & still_owned
        newest = self.processor.newest_event_ms
        if newest is not None:
            self.metrics.stream_lag.set(max(0.0, (_now_ms() - newest) / 1000))

    async def _handle(self, event: EventT, stream: Any, *, is_tick: bool) -> None:
        message = event.message
        partition = message.partition
        revocations = self._revocations.get(partition, 0)
        wall_ms = _now_ms()
        result = StepResult()
        done = [event]
        try:
            if is_tick:
                tick = decode_tick(event.value)
                if tick.catch_up_to is not None:
                    tp = TP(self._topic_names[topics.EVENTS], partition)
                    if not await self._apply_after_skipped(tp, tick.catch_up_to, (), result, wall_ms, revocations):
                        return
                # a tick shows the partition's events and saves only when a save is due (saving at
                # every tick too doubled the saves of a busy partition); events read back from
                # Kafka are saved at once: the consumer counts them as done
                save = tick.catch_up_to is not None or self._save_due(partition, wall_ms)
                if tick.advance:
                    self._adopt_partition(partition)
                    result.add_step(self.processor.handle_tick(partition, tick.wall_ms, save=save))
                    if not save and self.processor.owes_save(partition):
                        # changed by the wall clock alone: a flush request saves it in time
                        self._unsaved_since.setdefault(partition, wall_ms)
                else:
                    result.add_step(self.processor.flush(partition, wall_ms, save=save))
                if save:
                    done += self._take_pending(partition)
                else:
                    self._pending_since.pop(partition, None)
                    self._flush_requested.discard(partition)
            elif not await self._apply_after_skipped(
                message.tp, message.offset, (message,), result, wall_ms, revocations
            ):
                return
        except Unprocessable as exc:  # a bad tick
            await self._dead_letter(message, exc)
            if self._revoked_since(partition, revocations):
                return
        if not is_tick:
            # acknowledged only at the partition's saving flush and in offset order, dead-lettered
            # ones too: Faust commits the first unbroken run of acknowledged offsets, so an
            # early acknowledgement past unsaved events could commit over them
            pending = self._pending.setdefault(partition, [])
            pending.append(event)
            done = []
            since = self._pending_since.setdefault(partition, wall_ms)
            self._unsaved_since.setdefault(partition, wall_ms)
            if len(pending) >= FLUSH_EVENTS or wall_ms - since >= FLUSH_INTERVAL_S * 1000:
                save = self._save_due(partition, wall_ms)
                result.add_step(self.processor.flush(partition, wall_ms, save=save))
                if save:
                    done = self._take_pending(partition)
                else:  # shown, not saved: the next flush is due an interval after the next event
                    del self._pending_since[partition]
        # straight to the producer: Faust's Topic.send machinery cost more than the engine
        producer = self.app.producer
        names = self._topic_names
        unconfirmed = self._unconfirmed.setdefault(partition, [])
        try:
            for out in result.outputs:
                unconfirmed.append(await producer.send(names[out.topic], out.key, out.value, None, None, None))
            if result.saves:
                # outputs first (this step's and those of the partition's events since its last
                # flush), acknowledged by Kafka; only then the state that no longer owes them
                await asyncio.gather(*unconfirmed)
                unconfirmed.clear()
        except BaseException:
            self.processor.saves_lost(c for c, _ in result.saves)  # their next save writes them whole
            raise
        if self._revoked_since(partition, revocations):
            return
        write_saves(self.table, result.saves)
        self._observe(result, event)
        for finished in done:
            await stream.ack(finished)  # synchronous inside: no rebalance between save and ack

    async def _apply_after_skipped(
        self, tp: TP, offset: int, current: tuple[Any, ...], result: StepResult, wall_ms: int, revocations: int
    ) -> bool:
        """Apply the events before ``offset`` the consumer skipped, then ``current`` (from ``offset`` on).

        False when the partition was revoked meanwhile: the step is void (``_revoked_since``).
        """
        skipped = await self._skipped_before(tp, offset)
        if self._revoked_since(tp.partition, revocations):
            return False
        # never backwards: an event read back from Kafka may still be delivered later
        done = offset + len(current)
        self._processed_next[tp.partition] = max(self._processed_next.get(tp.partition, 0), done)
        # skipped ones first (the consumer counts them as done: applied here, saved at the
        # flush), then the current ones; an unprocessable one goes to the dead letters
        for record in (*skipped, *current):
            try:
                result.add_step(self.processor.handle_event(record.value, wall_ms))
            except Unprocessable as exc:
                await self._dead_letter(record, exc)
                if self._revoked_since(tp.partition, revocations):
                    return False
        return True

    async def _skipped_before(self, tp: TP, offset: int) -> list[Any]:
        """Events of the partition before ``offset`` the consumer skipped, read from Kafka.

        Around a rebalance Faust can hand over an event past one it never delivers, and its
        gap tracking then counts the missing offset as done, so it would be committed
        unprocessed (seen here: one event skipped per rebalance, now and then). Nothing writes
        engagement.events with holes (no transactions, no compaction), so a hole between the
        offset expected next and this one means skipped events: they are fetched directly
        (seeking Faust's consumer back does not work while its fetch loop still hands over
        what it fetched before). Earlier offsets than expected are fine (a seek back to the
        committed offset; the engines drop what they have already seen). A hole at the end of
        a partition has no next event to show it: ``tail_stalls`` finds it, and a tick with
        ``catch_up_to`` brings it here.
        """
        expected = self._processed_next.get(tp.partition)
        if expected is None:  # first event since the partition was assigned
            expected = getattr(self.app.consumer, "_committed_offset", {}).get(tp)
        if expected is None:
            # Faust does not always know the group's commit right after an assignment: ask Kafka
            expected = await self._group_start(tp)
        if expected is None or offset <= expected:
            return []
        log.warning(
            "%s[%d]: offset %d is next but %d was not processed: reading the skipped events from Kafka",
            tp.topic,
            tp.partition,
            offset,
            expected,
        )
        self.metrics.consumer_skips.inc()
        records = await asyncio.wait_for(
            _read_range(self.settings.kafka_bootstrap, tp.topic, tp.partition, expected, offset),
            SKIPPED_FETCH_TIMEOUT_S,
        )
        log.info("%s[%d]: %d skipped events read back", tp.topic, tp.partition, len(records))
        return records

    async def _group_start(self, tp: TP) -> int | None:
        """Where the group starts reading a partition: its committed offset, or the log start
        when nothing is committed (``auto_offset_reset=earliest``). None when Kafka does not answer
        in time: no hole check then, rather than a guess.

        The log start matters: a partition revoked and given back before its first commit was
        seen going on from the fetch position, past events applied but dropped unsaved at the
        revocation. Only with nothing committed, though: reading from the log start when a
        commit exists would read the partition's whole retained history again.
        """
        from aiokafka import TopicPartition

        try:
            thread: Any = self.app.consumer._thread  # type: ignore[attr-defined]  # Faust's aiokafka consumer thread
            consumer = thread._ensure_consumer()
            committed = await asyncio.wait_for(
                thread.call_thread(consumer.committed, TopicPartition(tp.topic, tp.partition)), SKIPPED_FETCH_TIMEOUT_S
            )
            if committed is not None:
                return int(committed)
            starts = await asyncio.wait_for(self.app.consumer.earliest_offsets(tp), SKIPPED_FETCH_TIMEOUT_S)
        except Exception as exc:
            log.warning("no start offset for %s[%d]: %s", tp.topic, tp.partition, type(exc).__name__)
            return None
        for key, start in starts.items():
            if (key.topic, key.partition) == (tp.topic, tp.partition):
                return int(start)
        return None

    async def _unstick_recovery(self) -> None:
        """Seek back a changelog partition whose records table recovery never received.

        Faust's recovery waits, with no timeout, until it has read every active changelog
        partition up to the highwater it measured. Once in CI a worker taking over partitions
        waited for minutes on a partition with two records, while Faust's own check saw fetch
        requests for it go out: most likely the records had been fetched and dropped, as
        ``_skipped_before`` sees happen to events. When the consumer's position is past what
        recovery has seen, the partition is sought back to the last record seen (recovery
        ignores records it has already applied); otherwise the stall is only logged.
        """
        if not self._in_recovery():
            return
        recovery: Any = self.app.tables.recovery  # type: ignore[attr-defined]  # on the concrete TableManager
        now = time.monotonic()
        for tp, remaining in list(recovery.active_remaining().items()):
            last_event = max(
                recovery._active_events_received_at.get(tp) or recovery._recovery_started_at or now,
                self._recovery_checked.get(tp, 0.0),
            )
            if remaining <= 0 or now - last_event < RECOVERY_STALL_S:
                continue
            seen = recovery.active_offsets[tp]  # last offset recovery applied, -1 for none
            position = await self.app.consumer.position(tp)
            if position is None or position <= seen + 1:
                # the consumer has not read past it: slow, or stuck in a way a seek cannot fix
                log.warning(
                    "recovery of %s[%d] has received nothing for %.0f s (at offset %d of %d, consumer at %s)",
                    tp.topic,
                    tp.partition,
                    now - last_event,
                    seen,
                    recovery.active_highwaters[tp],
                    position,
                )
                self._recovery_checked[tp] = now
                continue
            log.warning(
                "recovery of %s[%d] is stuck at offset %d (highwater %d) while its consumer is at %d: "
                "seeking back to %d",
                tp.topic,
                tp.partition,
                seen,
                recovery.active_highwaters[tp],
                position,
                max(seen, 0),
            )
            self.metrics.recovery_reseeks.inc()
            self._recovery_checked[tp] = now  # one seek per stall period
            await self.app.consumer.seek_wait({tp: max(seen, 0)})

    def _revoked_since(self, partition: int, revocations: int) -> bool:
        """Whether the partition was revoked while a step waited on Kafka.

        Its engines and unsaved events were dropped then, and the next owner (maybe this
        worker again) starts from the committed offset and the saved state. A save now
        would land in the changelog after that owner's writes, and an acknowledgement
        could commit for it: the step is void, its events are simply processed again.
        """
        if self._revocations.get(partition, 0) == revocations:
            return False
        log.info("partition %d was revoked during a step: the step is dropped, its events go again", partition)
        return True

    def _save_due(self, partition: int, wall_ms: int) -> bool:
        """Whether a flush of the partition now also saves (see SAVE_INTERVAL_S)."""
        since = self._unsaved_since.get(partition)
        if since is None:
            return False
        return len(self._pending.get(partition, ())) >= FLUSH_EVENTS or wall_ms - since >= SAVE_INTERVAL_S * 1000

    def _take_pending(self, partition: int) -> list[EventT]:
        self._pending_since.pop(partition, None)
        self._unsaved_since.pop(partition, None)
        self._flush_requested.discard(partition)
        return self._pending.pop(partition, [])

    def _observe(self, result: StepResult, event: EventT) -> None:
        m = self.metrics
        if result.processed:
            m.events_processed.inc(result.processed - result.duplicates)
        if result.duplicates:
            m.duplicates.inc(result.duplicates)
        if result.late_applied:
            m.late_events.labels(outcome="applied").inc(result.late_applied)
        if result.late_dropped:
            m.late_events.labels(outcome="dropped").inc(result.late_dropped)
        if result.future_dropped:
            m.late_events.labels(outcome="future").inc(result.future_dropped)

    async def _dead_letter(self, message: Any, error: Unprocessable) -> None:
        reason = error.reason
        log.warning("dead-lettered %s[%d]@%d: %s", message.topic, message.partition, message.offset, reason)
        self.metrics.dead_letters.labels(reason=error.category).inc()
        await self._topic[topics.DEAD_LETTER].send(
            key=message.key,
            value=message.value,
            headers=[
                ("reason", reason.encode()),
                ("source_topic", str(message.topic).encode()),
                ("source_partition", str(message.partition).encode()),
                ("source_offset", str(message.offset).encode()),
            ],
        )


async def _read_range(bootstrap: str, topic: str, partition: int, start: int, end: int) -> list[Any]:
    """Records ``start`` to ``end`` (exclusive) of one partition, with a consumer of its own."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap.split(","), enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, start)
        records: list[Any] = []
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            records += [r for r in batch.get(tp, []) if r.offset < end]
        return records
    finally:
        await consumer.stop()


def _api_filters(query: Any) -> dict[str, str | None]:
    return {"state": query.get("state") or None, "platform": query.get("platform") or None}


MAX_WINDOWS_COMMUNITIES = 100
MAX_WINDOWS_LIMIT = 1000


def _windows_query(query: Any) -> tuple[list[str], str, int]:
    """``?community=A&community=B&window=1h&limit=48`` -> (ids, window, limit), or ValueError saying why."""
    ids = list(dict.fromkeys(query.getall("community", [])))
    if not ids or len(ids) > MAX_WINDOWS_COMMUNITIES:
        raise ValueError(f"give 1 to {MAX_WINDOWS_COMMUNITIES} community parameters (community=ID&community=ID...)")
    window = query.get("window", "1h")
    if window not in ("1h", "1d"):
        raise ValueError(f"window must be 1h or 1d, not {window!r}")
    raw = query.get("limit", "48")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_WINDOWS_LIMIT:
        raise ValueError(f"limit must be a whole number from 1 to {MAX_WINDOWS_LIMIT}, not {raw!r}")
    return ids, window, int(raw)


def add_read_api(worker: PulseWorker, client: Any) -> None:
    """GET /api/communities, /api/communities/{id} and /api/windows, answered from ClickHouse.

    With the embedded engine only this process may open the store, so the worker
    is where reads go; queries run in a thread so the stream never waits on them.
    """
    from pipeline.storage import queries

    app = worker.app

    @app.page("/api/communities")
    async def communities(web: Any, request: Any) -> Any:
        rows = await asyncio.to_thread(queries.list_communities, client, **_api_filters(request.query))
        return web.json(rows)

    @app.page("/api/windows")
    async def windows(web: Any, request: Any) -> Any:
        # the last windows of several communities in one query (dashboards, the e2e benchmark)
        try:
            ids, window, limit = _windows_query(request.query)
        except ValueError as exc:
            return web.json({"error": str(exc)}, status=400)
        found = await asyncio.to_thread(queries.windows_of, client, ids, window, limit)
        return web.json(found)

    @app.page("/api/communities/{community_id}")
    async def community(web: Any, request: Any, community_id: str) -> Any:
        detail = await asyncio.to_thread(queries.community_detail, client, community_id)
        if detail is None:
            return web.json({"error": f"unknown community {community_id!r}"}, status=404)
        return web.json(detail)


class _BoundedStopWorker(faust.Worker):
    """Faust's worker, whose stop on SIGTERM/SIGINT ends the process after SHUTDOWN_TIMEOUT_S at most."""

    def _on_sigterm(self) -> None:
        _end_process_after(SHUTDOWN_TIMEOUT_S)
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        _end_process_after(SHUTDOWN_TIMEOUT_S)
        super()._on_sigint()


def _end_process_after(seconds: float) -> None:
    def end() -> None:
        log.error("the worker did not stop within %.0f s of the signal (Kafka unreachable?): exiting anyway", seconds)
        logging.shutdown()
        os._exit(1)

    timer = threading.Timer(seconds, end)
    timer.daemon = True  # a clean stop exits without waiting for it
    timer.start()


def run_worker(settings: Settings, *, with_sink: bool = True) -> int:
    """Run until SIGTERM/SIGINT; Faust's worker stops the agent, flushes and commits."""
    from pipeline.storage.client import connect
    from pipeline.storage.migrate import migrate
    from pipeline.storage.sink import Sink

    (settings.state_dir / "worker").mkdir(parents=True, exist_ok=True)
    worker = PulseWorker(settings)
    client = connect(settings)
    migrate(client, events_ttl_days=settings.events_ttl_days)
    add_read_api(worker, client)
    stop = threading.Event()
    sink_thread: threading.Thread | None = None
    if with_sink:
        sink = Sink(settings, connect(settings), metrics=worker.metrics.sink)
        sink_thread = threading.Thread(target=sink.run, args=(stop,), name="clickhouse-sink", daemon=True)
        sink_thread.start()
    faust_worker = _BoundedStopWorker(worker.app, loglevel=settings.log_level, quiet=True, override_logging=False)
    try:
        faust_worker.execute_from_commandline()
    finally:
        stop.set()
        if sink_thread is not None:
            sink_thread.join(timeout=30)
    return 0
