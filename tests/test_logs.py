"""RepeatFilter: Kafka clients' repeated errors are held back, with a count; pulse's own never are."""

from __future__ import annotations

import logging

from hypothesis import given
from hypothesis import strategies as st

from pipeline.logs import RepeatFilter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


CONNECT = "Unable connect to node with id %s: %s"


def record(name: str, msg: str = CONNECT, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, (1, "refused"), None)


def test_first_of_a_kind_then_one_per_window_with_the_count() -> None:
    clock = Clock()
    f = RepeatFilter(window_s=30, clock=clock)
    shown = []
    for _ in range(50):  # ten a second for five seconds
        r = record("aiokafka")
        if f.filter(r):
            shown.append(r.getMessage())
        clock.now += 0.1
    assert shown == ["Unable connect to node with id 1: refused"]
    clock.now = 31
    r = record("aiokafka")
    assert f.filter(r)
    assert r.getMessage() == "Unable connect to node with id 1: refused (49 more like this in the last 30 s)"
    clock.now = 62
    quiet = record("aiokafka")
    assert f.filter(quiet) and "more like this" not in quiet.getMessage()  # nothing held back since


def test_kinds_are_counted_apart_and_pulse_records_always_pass() -> None:
    f = RepeatFilter(window_s=30, clock=Clock())
    assert f.filter(record("aiokafka.consumer.fetcher", "Failed fetch messages from %s: %s"))
    assert f.filter(record("aiokafka"))
    assert f.filter(record("kafka.cluster", "Metadata refresh: failed %s %s"))
    assert f.filter(record("aiokafka", level=logging.WARNING))
    assert not f.filter(record("aiokafka"))
    for _ in range(5):
        assert f.filter(record("pipeline.worker.app"))
        assert f.filter(record("kafkaesque"))  # not a Kafka client's logger


def test_every_handler_gets_the_same_answer_for_one_record() -> None:
    f = RepeatFilter(window_s=30, clock=Clock())
    first, second = record("aiokafka"), record("aiokafka")
    assert f.filter(first) and f.filter(first)  # two handlers, one record
    assert not f.filter(second) and not f.filter(second)


@given(st.lists(st.floats(min_value=0, max_value=0.5), min_size=1, max_size=300))
def test_nothing_is_lost_from_the_count(gaps: list[float]) -> None:
    clock = Clock()
    f = RepeatFilter(window_s=1.0, clock=clock)
    counted = 0
    for gap in gaps:
        clock.now += gap
        r = record("kafka.conn")
        if f.filter(r):
            message = r.getMessage()
            counted += 1 + (int(message.split("(")[1].split()[0]) if "more like this" in message else 0)
    clock.now += 2
    last = record("kafka.conn")
    assert f.filter(last)
    message = last.getMessage()
    counted += 1 + (int(message.split("(")[1].split()[0]) if "more like this" in message else 0)
    assert counted == len(gaps) + 1
