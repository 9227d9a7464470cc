"""A blocking face on aiokafka's consumer, for the sink's thread.

The sink is synchronous code (it runs in a thread of the worker, or alone under ``pulse db sink``).
kafka-python parses every record in pure Python, which capped the sink below the rate at which
ClickHouse takes rows (bench/sink_throughput.py: its consumer alone was slower than the direct
insert). aiokafka parses record batches in C and fetches ahead in the background; it already
ships with Faust. Its consumer lives here on a private event loop in a daemon thread, so the
group's heartbeats and the next fetch go on while the sink decodes and inserts; every call from
the sink's thread is handed to that loop and waited for.

Rebalances happen on the loop's thread, at any moment. ``revoked`` counts revocations; the sink
compares it before and after a step and treats its open batch as stale (the next owner reads it
again from the committed offsets), as it did with kafka-python's revocation inside ``poll``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

T = TypeVar("T")

#: time a call may wait for the loop beyond its own timeout before the sink gives up on it
_SLACK_S = 30.0


class ThreadedConsumer:
    """``AIOKafkaConsumer`` subscribed to ``topics``, driven from another thread."""

    def __init__(self, topics: Iterable[str], **config: Any) -> None:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.abc import ConsumerRebalanceListener

        self.revoked = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sink-kafka", daemon=True)
        self._thread.start()
        owner = self

        class _Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked: Any) -> None:
                if revoked:
                    owner.revoked += 1

            def on_partitions_assigned(self, assigned: Any) -> None:
                pass

        async def start() -> Any:
            consumer = AIOKafkaConsumer(**config)
            consumer.subscribe(topics=sorted(topics), listener=_Listener())
            await consumer.start()
            return consumer

        try:
            self._consumer = self._call(start(), 120)
        except BaseException:
            self._stop_loop()
            raise

    def _call(self, coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s + _SLACK_S)

    def _sync(self, fn: Any, *args: Any) -> Any:
        """Run a plain consumer method on the loop thread (the subscription state is not locked)."""

        async def call() -> Any:
            return fn(*args)

        return self._call(call(), 0)

    def poll(self, timeout_s: float, max_records: int) -> dict[Any, list[Any]]:
        """Records by partition, at most ``max_records``; waits up to ``timeout_s`` for the first."""
        timeout_ms = int(max(0.0, timeout_s) * 1000)
        records: dict[Any, list[Any]] = self._call(
            self._consumer.getmany(timeout_ms=timeout_ms, max_records=max(1, max_records)), timeout_s
        )
        return records

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        from aiokafka import TopicPartition

        self._call(self._consumer.commit({TopicPartition(t, p): o for (t, p), o in offsets.items()}), 30)

    def assignment(self) -> set[Any]:
        return set(self._sync(self._consumer.assignment))

    def paused(self) -> set[Any]:
        return set(self._sync(self._consumer.paused))

    def pause(self, *partitions: Any) -> None:
        self._sync(self._consumer.pause, *partitions)

    def resume(self, *partitions: Any) -> None:
        self._sync(self._consumer.resume, *partitions)

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self._call(self._consumer.stop(), 10)
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()
