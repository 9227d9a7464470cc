"""The ClickHouse sink: Kafka topics -> ClickHouse tables, at least once, without duplicates in reads.

One aiokafka consumer (auto-commit off; ``consumer.py`` drives it from the sink's thread) reads
the events, windows, first-responses and health topics. Messages become rows of insert values
(``rows.py``: checked against the models, times as ticks) and gather in a ``Batch`` until the
``BatchPolicy`` says it is due (rows, bytes or age). Then, in order:

1. each table's rows are inserted, column-oriented, with a deterministic
   ``insert_deduplication_token``; rows the store refuses are isolated by splitting the batch
   (``insert_isolating``);
2. refused and undecodable messages go to the dead-letter topic, the reason in headers;
3. only then are the offsets committed.

When ClickHouse is unavailable (any error that is not about the data) the batch is kept, every
assigned partition is paused, and the insert is retried with exponential backoff; polling goes on
(paused, it returns nothing) so the group does not take the sink for a stuck consumer. Nothing
is dropped; consumption resumes once the batch is stored. A batch retried after a partial
insert, or messages replayed after a crash, give duplicate rows at worst, which
ReplacingMergeTree folds and the queries read with FINAL/LIMIT BY.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline import topics
from pipeline.config import Settings
from pipeline.storage.batching import (
    Backoff,
    Batch,
    BatchPolicy,
    DeadLetter,
    Record,
    Source,
    describe_error,
    insert_isolating,
)
from pipeline.storage.rows import Row, RowError, Table, tables_by_topic

log = logging.getLogger(__name__)

SINK_GROUP = "pulse-storage-sink"

# ClickHouse error codes that mean "this data is wrong", not "the store is unwell"
ROW_ERROR_CODES = frozenset(
    {
        6,  # CANNOT_PARSE_TEXT
        27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
        38,  # CANNOT_PARSE_DATE
        41,  # CANNOT_PARSE_DATETIME
        53,  # TYPE_MISMATCH
        69,  # ARGUMENT_OUT_OF_BOUND
        70,  # CANNOT_CONVERT_TYPE
        72,  # CANNOT_PARSE_NUMBER
        117,  # INCORRECT_DATA
        131,  # TOO_LARGE_STRING_SIZE
        321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
        349,  # CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
        469,  # VIOLATED_CONSTRAINT
    }
)

# sink table -> label of pipeline.metrics.SinkMetrics
_METRIC_LABEL = {
    "events": "events",
    "window_results": "windows",
    "first_responses": "first_responses",
    "health_snapshots": "health",
}


def is_row_error(exc: BaseException) -> bool:
    """True when the store refused the data itself; anything else is treated as an outage."""
    from clickhouse_connect.driver.exceptions import DatabaseError, DataError

    if isinstance(exc, DataError | ValueError | TypeError | OverflowError | struct.error | UnicodeError):
        return True
    return isinstance(exc, DatabaseError) and getattr(exc, "code", None) in ROW_ERROR_CODES


def is_connection_lost(exc: BaseException) -> bool:
    """The client itself is unusable (closed, network gone): reconnect before the next retry."""
    from clickhouse_connect.driver.exceptions import OperationalError, ProgrammingError

    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, ProgrammingError) and "closed" in str(exc).lower()


@dataclass
class SinkStats:
    rows_inserted: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    failures: int = 0
    dead_letters: int = 0
    reconnects: int = 0
    last_error: str | None = None

    @property
    def total_rows(self) -> int:
        return sum(self.rows_inserted.values())


class Sink:
    """Kafka -> ClickHouse. ``run(stop)`` loops; ``run_once()`` is one poll/flush step.

    The sink owns ``client``: after a lost connection it closes it and opens a new one with
    ``reconnect`` (default ``pipeline.storage.client.connect(settings)``).
    """

    def __init__(
        self,
        settings: Settings,
        client: Any,
        *,
        policy: BatchPolicy | None = None,
        backoff: Backoff | None = None,
        group_id: str | None = None,
        reconnect: Callable[[], Any] | None = None,
        metrics: Any | None = None,
        registry: Any | None = None,
        idle_wait_s: float = 0.2,
    ) -> None:
        from kafka import KafkaProducer

        from pipeline.storage.consumer import ThreadedConsumer

        self.settings = settings
        self.client = client
        self.policy = policy or BatchPolicy()
        self.backoff = backoff or Backoff()
        self.stats = SinkStats()
        self.idle_wait_s = idle_wait_s
        self._reconnect = reconnect or self._default_reconnect
        self._metrics = metrics if metrics is not None else _metrics_for(registry)
        self._tables: dict[str, Table] = tables_by_topic(settings.topic)
        self._dead_letter_topic = settings.topic(topics.DEAD_LETTER)
        self._batch: Batch[Row] = Batch()
        self._failed_attempts = 0
        self._retry_at: float | None = None
        self._client_broken = False
        self._consumer = ThreadedConsumer(
            self._tables,
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=group_id or settings.topic_prefix + SINK_GROUP,
            client_id="pulse-sink",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.policy.max_rows,
            # fetch ahead up to a full batch per partition (default 1 MiB: ~1,600 window rows)
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_wait_ms=topics.CONSUMER_FETCH_WAIT_MS,
            # the sink may hold a batch while ClickHouse is down; it keeps polling (paused)
            # to stay in the group, so the default poll interval is enough
        )
        self._revoked_seen = 0
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=settings.kafka_bootstrap.split(","),
                client_id="pulse-sink-deadletter",
                acks="all",
                linger_ms=5,
            )
        except BaseException:
            self._consumer.close()  # its loop thread would outlive a sink that never started
            raise

    # ------------------------------------------------------------ loop

    def run(self, stop: threading.Event) -> None:
        """Consume and store until ``stop`` is set; then store what is pending (one try) and close."""
        log.info("sink started on %s", ", ".join(sorted(self._tables)))
        try:
            while not stop.is_set():
                try:
                    self.run_once()
                except Exception:  # keep the sink alive; the batch is kept and retried
                    log.exception("sink step failed")
                    stop.wait(self.backoff.delay(max(1, self._failed_attempts)))
            if self._batch.count and self._retry_at is None:
                self.flush()
        finally:
            self.close()

    def run_once(self, timeout_s: float | None = None) -> int:
        """One step: retry a held batch, or poll and flush when due. Returns rows stored."""
        wait = self.idle_wait_s if timeout_s is None else timeout_s
        now = time.monotonic()
        if self._retry_at is not None:
            if now < self._retry_at:
                # partitions are paused: this keeps the group membership alive. It returns
                # records only when a rebalance replaced the assignment (and dropped the held
                # batch): those must be kept, their position has moved past them.
                self._add_records(self._poll(min(wait, self._retry_at - now), 1))
                return 0
            return self.flush()
        poll_wait = self.policy.wait(self._batch.count, self._batch.opened_at, now, wait)
        self._add_records(self._poll(poll_wait, max(1, self.policy.room(self._batch.count))))
        batch = self._batch  # after poll: a rebalance inside it may have replaced the batch
        if self.policy.due(batch.count, batch.nbytes, batch.opened_at, time.monotonic()):
            return self.flush()
        return 0

    def _poll(self, wait_s: float, max_records: int) -> dict[Any, list[Any]]:
        records = self._consumer.poll(wait_s, max_records)
        if self._consumer.revoked != self._revoked_seen:
            # a rebalance (on the consumer's thread) took partitions since the last poll: the
            # records returned now are of the new assignment, the open batch may not be
            self._revoked_seen = self._consumer.revoked
            self._on_revoked()
        return records

    def _add_records(self, records: dict[Any, list[Any]]) -> None:
        now = time.monotonic()
        batch = self._batch
        for tp, messages in records.items():
            table = self._tables.get(tp.topic)
            if table is None:
                for message in messages:
                    self._add_odd(None, message, now)
                continue
            insert_row = table.insert_row
            rows: list[Row] = []
            sources: list[Record] = []
            nbytes = 0
            for message in messages:  # the hot path: one partition's records, in offset order
                value = message.value
                try:
                    row = insert_row(value) if value is not None else None
                except RowError:
                    row = None
                if row is None:
                    # flush what came before, so that offsets stay in order, then the odd one
                    batch.add_rows(table.name, rows, sources, nbytes, now)
                    rows, sources, nbytes = [], [], 0
                    self._add_odd(table, message, now)
                    continue
                rows.append(row)
                sources.append(message)  # the consumer's record is the Source (topic, offset, ...)
                nbytes += len(value)
            batch.add_rows(table.name, rows, sources, nbytes, now)

    def _add_odd(self, table: Table | None, message: Any, now: float) -> None:
        """A tombstone, a message of no table's topic, or one that does not decode."""
        source = Source(message.topic, message.partition, message.offset, message.key, message.value)
        if message.value is None:
            self._batch.skip(source, now)  # a tombstone of a compacted topic: nothing to store
            return
        if table is None:
            self._batch.add_dead(DeadLetter(source, "decode", f"no table for topic {message.topic}"), now)
            return
        try:
            row = table.insert_row(message.value)
        except RowError as exc:
            self._batch.add_dead(DeadLetter(source, "decode", f"{table.name}: {exc.reason}"), now)
            return
        self._batch.add_row(table.name, row, source, now)

    # ------------------------------------------------------------ flush

    def flush(self) -> int:
        """Store the current batch, dead-letter what was refused, commit. Returns rows stored.

        On an outage the batch is kept, partitions are paused and a retry is scheduled.
        """
        batch = self._batch
        if batch.count == 0:
            self._retry_at = None  # nothing held (any more): never stay paused
            return 0
        started = time.monotonic()
        try:
            if self._client_broken:
                self._replace_client()
            stored, dead = self._store(batch)
            self._send_dead_letters(dead)
        except Exception as exc:
            self._hold(exc)
            return 0
        self._commit(batch)
        self._record_success(stored, time.monotonic() - started, len(dead))
        self._batch = Batch()
        if self._retry_at is not None or self._failed_attempts:
            log.info("ClickHouse is back: batch stored after %d retries", self._failed_attempts)
            self._consumer.resume(*self._consumer.assignment())
        self._retry_at = None
        self._failed_attempts = 0
        return sum(stored.values())

    def _store(self, batch: Batch[Row]) -> tuple[dict[str, int], list[DeadLetter]]:
        stored: dict[str, int] = {}
        dead = list(batch.dead)
        for table_name, rows in batch.rows.items():
            table = next(t for t in self._tables.values() if t.name == table_name)

            def insert(part: Sequence[Row], token: str, t: Table = table) -> None:
                self._insert(t, part, token)

            refused = insert_isolating(
                insert,
                rows,
                batch.token(table_name),
                is_row_error,
            )
            sources = batch.sources[table_name]
            for index, reason in refused:
                dead.append(DeadLetter(sources[index], "insert", f"{table_name}: {reason}"))
            stored[table_name] = len(rows) - len(refused)
        return stored, dead

    def _insert(self, table: Table, rows: Sequence[Row], token: str) -> None:
        # column-oriented: clickhouse-connect would transpose the rows itself, more slowly
        self.client.insert(
            table.name,
            list(zip(*rows, strict=True)),
            column_names=table.columns,
            column_oriented=True,
            settings={"insert_deduplication_token": token},
        )

    def _send_dead_letters(self, dead: list[DeadLetter]) -> None:
        if not dead:
            return
        futures = []
        for letter in dead:
            s = letter.source
            headers = [
                ("reason", letter.reason.encode("utf-8", "replace")),
                ("stage", letter.stage.encode()),
                ("source_topic", s.topic.encode()),
                ("source_partition", str(s.partition).encode()),
                ("source_offset", str(s.offset).encode()),
            ]
            futures.append(
                self._producer.send(self._dead_letter_topic, key=s.key, value=s.value, headers=headers)
            )
        self._producer.flush(timeout=30)
        for future in futures:
            future.get(timeout=30)  # raise if Kafka did not take it: the batch is retried
        for letter in dead:
            log.warning(
                "dead-lettered %s/%d@%d (%s): %s",
                letter.source.topic,
                letter.source.partition,
                letter.source.offset,
                letter.stage,
                letter.reason,
            )

    def _commit(self, batch: Batch[Row]) -> None:
        try:
            self._consumer.commit(batch.next_offsets)
        except Exception as exc:
            # rows are stored; after a rebalance they are read again and folded by the tables
            log.warning("offset commit failed after a stored batch (%s); rows may be re-read", exc)

    def _hold(self, exc: BaseException) -> None:
        self._failed_attempts += 1
        delay = self.backoff.delay(self._failed_attempts)
        self._retry_at = time.monotonic() + delay
        self.stats.failures += 1
        self.stats.last_error = describe_error(exc)
        if is_connection_lost(exc):
            self._client_broken = True
        if self._metrics is not None:
            for table_name in self._batch.rows:
                self._metrics.failures.labels(table=_METRIC_LABEL.get(table_name, table_name)).inc()
        assigned = self._consumer.assignment()
        if assigned:
            self._consumer.pause(*assigned)
        log.warning(
            "ClickHouse insert failed (attempt %d, retry in %.1fs, %d messages held, "
            "consumption paused): %s",
            self._failed_attempts,
            delay,
            self._batch.count,
            self.stats.last_error,
        )

    def _record_success(self, stored: dict[str, int], seconds: float, dead: int) -> None:
        self.stats.batches += 1
        self.stats.dead_letters += dead
        for name, n in stored.items():
            self.stats.rows_inserted[name] = self.stats.rows_inserted.get(name, 0) + n
        if self._metrics is not None:
            self._metrics.batch_duration.observe(seconds)
            for name, n in stored.items():
                label = _METRIC_LABEL.get(name, name)
                self._metrics.batches.labels(table=label).inc()
                self._metrics.rows.labels(table=label).inc(n)

    def _replace_client(self) -> None:
        from pipeline.storage.client import close_quietly

        close_quietly(self.client)
        self.client = self._reconnect()
        self._client_broken = False
        self.stats.reconnects += 1

    def _default_reconnect(self) -> Any:
        from pipeline.storage.client import connect

        return connect(self.settings)

    def _on_revoked(self) -> None:
        # Partitions may move: forget the uncommitted batch, the next owner (maybe us again,
        # from the committed offsets) reads it again. Replays are folded by the tables.
        if self._batch.count:
            log.info("partitions revoked: dropping %d uncommitted messages to re-read", self._batch.count)
        self._batch = Batch()
        self._retry_at = None
        self._failed_attempts = 0

    # ------------------------------------------------------------ state

    @property
    def held(self) -> bool:
        """True while a batch waits for ClickHouse (consumption paused)."""
        return self._retry_at is not None

    @property
    def pending(self) -> int:
        return self._batch.count

    def close(self) -> None:
        for closer in (self._consumer.close, lambda: self._producer.close(timeout=5)):
            try:
                closer()
            except Exception:
                log.debug("closing the sink's Kafka clients failed", exc_info=True)


def _metrics_for(registry: Any | None) -> Any | None:
    """The sink metrics of ``registry``: registered here, or found where WorkerMetrics put them."""
    if registry is None:
        return None
    from types import SimpleNamespace

    from pipeline.metrics import SinkMetrics

    try:
        return SinkMetrics(registry)
    except ValueError:
        pass  # already registered (WorkerMetrics registers the sink's): use those collectors
    # prometheus_client keeps no public lookup by name; this mapping has been stable for years
    collectors = getattr(registry, "_names_to_collectors", {})
    found = {
        "batches": collectors.get("pulse_sink_batches"),
        "rows": collectors.get("pulse_sink_rows"),
        "failures": collectors.get("pulse_sink_failures"),
        "batch_duration": collectors.get("pulse_sink_batch_seconds"),
    }
    if all(found.values()):
        return SimpleNamespace(**found)
    log.warning("sink metrics are registered but not found by name: pass metrics= to count them")
    return None
