"""Create the pipeline's Kafka topics (pipeline.topics.TOPICS) idempotently."""

from __future__ import annotations

import time

from pipeline.stack.process import StackError
from pipeline.topics import TOPICS, TopicSpec

TOPIC_ALREADY_EXISTS = 36
# the controller may still be settling right after start-up; these clear by themselves
_RETRIABLE = {5, 7, 41}  # LEADER_NOT_AVAILABLE, REQUEST_TIMED_OUT, NOT_CONTROLLER


def create_topics(
    bootstrap: str,
    prefix: str = "",
    specs: tuple[TopicSpec, ...] = TOPICS,
    *,
    replication_factor: int = 1,
    timeout: float = 30.0,
) -> list[str]:
    """Create every topic of ``specs`` under ``prefix``; return the names newly created.

    Topics that already exist are left alone (their partitions and configs are not
    changed), so running it again is harmless. Returns once every topic has a leader
    for each partition, so producers can write at once.
    """
    from kafka.errors import KafkaError

    try:
        return _create(bootstrap, prefix, specs, replication_factor, timeout)
    except KafkaError as exc:
        # a timeout or an unreachable broker: say where, not a client traceback
        raise StackError(f"could not create the Kafka topics on {bootstrap}: {exc!r}") from exc


def _create(
    bootstrap: str, prefix: str, specs: tuple[TopicSpec, ...], replication_factor: int, timeout: float
) -> list[str]:
    from kafka.admin import KafkaAdminClient

    wanted = {
        prefix + spec.name: {
            "num_partitions": spec.partitions,
            "replication_factor": replication_factor,
            "configs": dict(spec.configs),
        }
        for spec in specs
    }
    created: list[str] = []
    deadline = time.monotonic() + timeout
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="pulse-stack-topics",
        request_timeout_ms=int(min(timeout, 15) * 1000),
    )
    try:
        pending = dict(wanted)
        while pending:
            result = admin.create_topics(pending, timeout_ms=10_000, raise_errors=False)
            retry: dict[str, dict[str, object]] = {}
            for topic in result["topics"]:
                name, code = topic["name"], topic["error_code"]
                if code == 0:
                    created.append(name)
                elif code == TOPIC_ALREADY_EXISTS:
                    pass
                elif code in _RETRIABLE and time.monotonic() < deadline:
                    retry[name] = pending[name]
                else:
                    message = topic.get("error_message") or f"error code {code}"
                    raise StackError(f"could not create Kafka topic {name!r} on {bootstrap}: {message}")
            pending = retry
            if pending:
                time.sleep(0.5)
        remaining_ms = max(1000, int((deadline - time.monotonic()) * 1000))
        admin.wait_for_topics(list(wanted), timeout_ms=remaining_ms)
    finally:
        admin.close()
    return created


def delete_topics(bootstrap: str, prefix: str, specs: tuple[TopicSpec, ...] = TOPICS) -> None:
    """Delete the topics of ``specs`` under a non-empty ``prefix`` (tests clean up with it)."""
    if not prefix:
        raise ValueError("refusing to delete the unprefixed production topics")
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="pulse-stack-topics")
    try:
        admin.delete_topics([prefix + spec.name for spec in specs], timeout_ms=10_000, raise_errors=False)
    finally:
        admin.close()
