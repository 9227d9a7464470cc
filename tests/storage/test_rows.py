"""Messages -> rows: every topic's model, the sink's insert values (exactly the model's, times as
ticks), and the reasons given for what cannot be stored."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic_core import from_json
from storage_samples import event, first_response, health, window

from pipeline import topics
from pipeline.storage.rows import (
    TABLE_BY_TOPIC,
    TABLES,
    RowError,
    datetime_ticks,
    iso_z_ticks,
    tables_by_topic,
    to_insert_values,
)


def test_every_result_topic_has_a_table() -> None:
    assert set(TABLE_BY_TOPIC) == {topics.EVENTS, topics.WINDOWS, topics.FIRST_RESPONSES, topics.HEALTH}
    assert set(tables_by_topic(lambda n: "p." + n)) == {"p." + t.topic for t in TABLES}


@pytest.mark.parametrize(
    ("topic", "item"),
    [
        (topics.EVENTS, event()),
        (topics.WINDOWS, window()),
        (topics.FIRST_RESPONSES, first_response()),
        (topics.HEALTH, health(state="dying", previous="healthy")),
    ],
)
def test_a_message_becomes_the_row_of_its_model(topic: str, item: object) -> None:
    table = TABLE_BY_TOPIC[topic]
    row = table.decode(item.to_json_bytes())  # type: ignore[attr-defined]
    assert dict(zip(table.columns, row, strict=True)) == item.__dict__


def test_undecodable_messages_give_a_reason_naming_the_field() -> None:
    table = TABLE_BY_TOPIC[topics.WINDOWS]
    good = json.loads(window().to_json_bytes())
    with pytest.raises(RowError, match=r"version: Input should be greater than or equal to 1"):
        table.decode(json.dumps({**good, "version": 0}).encode())
    with pytest.raises(RowError, match=r"window: Input should be '1h' or '1d'"):
        table.decode(json.dumps({**good, "window": "5m"}).encode())
    with pytest.raises(RowError, match=r"tombstone"):
        table.decode(None)
    with pytest.raises(RowError, match=r"Invalid JSON"):
        table.decode(b"{not json")


@given(st.binary(max_size=200))
def test_arbitrary_bytes_either_decode_or_raise_row_error(data: bytes) -> None:
    for table in TABLES:
        try:
            row = table.decode(data)
        except RowError as exc:
            assert exc.reason
        else:
            assert len(row) == len(table.columns)


# ---------------------------------------------------------------- the sink's insert values

SAMPLES = {
    topics.EVENTS: event(),
    topics.WINDOWS: window(),
    topics.FIRST_RESPONSES: first_response(),
    topics.HEALTH: health(state="dying", previous="healthy", last_post_at=window().window_start),
}

TIMES = [
    "2024-05-06T10:00:00Z",
    "2024-05-06T10:00:00.5Z",
    "2024-05-06T10:00:00.123456Z",
    "2024-05-06T10:00:00.1234567Z",
    "2024-05-06T10:00:00+02:00",
    "2024-05-06T10:00:00",
    "2024-05-06",
    "2024-02-30T00:00:00Z",
    "2024-05-06 10:00:00Z",
    "1969-12-31T23:59:59.999Z",
    "2024-05-06T24:00:00Z",
    "2024-05-06t10:00:00z",
    "1715000000",
    "",
]

json_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=4),
    st.sampled_from(["1h", "1d", "5m", "dying", "healthy", "open", "bot", "a.b", "A", "a\n", "x" * 300]),
    st.sampled_from(TIMES),
    st.integers(0, 2**31),
    st.lists(st.sampled_from(["dying", "dead", "when_we_can", "nope"]), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def neighbours(value: Any) -> list[Any]:
    """Values close to a field's own: its boundaries and the neighbouring JSON types."""
    if isinstance(value, bool):
        return [True, False, 0, 1, "true", None]
    if isinstance(value, int):
        return [-1, 0, 1, 2, 2**32, 2**64, 1.0, 0.5, "1", True, None]
    if isinstance(value, float):
        return [0.0, -0.0, 1, 2**60, 1e308, 0.5, "0.5", True, None]
    if isinstance(value, str):
        return [*TIMES, value, value + "\n", value.upper(), "", "x" * 257, "1h", "dying", "a-b.c_9", "9a", None, 1]
    if isinstance(value, list):
        return [[], ["dying"], ["dying", "dead"], ["nope"], [1], "dying", None]
    return [None, 0, 0.5, "", "dying", "1d", "x" * 65, TIMES[0], [], {}, False]


def near(value: Any) -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(neighbours(value)), json_values)


def insert_or_reason(table: Any, value: bytes) -> Any:
    try:
        return table.insert_row(value)
    except RowError as exc:
        return exc.reason


def model_or_reason(table: Any, value: bytes) -> Any:
    try:
        return to_insert_values(table.decode(value))
    except RowError as exc:
        return exc.reason


def assert_same_answer(table: Any, value: bytes, context: object = None) -> None:
    """The fast path's answer is the model's; a time that defaults to "now" (received_at when
    absent) is taken twice, so there the two may differ by the time between the calls."""
    fast, model = insert_or_reason(table, value), model_or_reason(table, value)
    defaulted = "received_at" in table.columns and "received_at" not in json.loads(value)
    if defaulted and isinstance(fast, tuple) and isinstance(model, tuple):
        at = table.columns.index("received_at")
        assert abs(fast[at] - model[at]) < 1000, (context, fast[at], model[at])
        fast, model = fast[:at] + fast[at + 1 :], model[:at] + model[at + 1 :]
    assert fast == model, context


@pytest.mark.parametrize("topic", sorted(SAMPLES))
def test_the_wire_format_takes_the_fast_path_to_the_models_values(topic: str) -> None:
    table = TABLE_BY_TOPIC[topic]
    value = SAMPLES[topic].to_json_bytes()  # type: ignore[attr-defined]
    assert table._fast is not None and table._fast(from_json(value)) is not None
    assert table.insert_row(value) == to_insert_values(table.decode(value))


@pytest.mark.parametrize("topic", sorted(SAMPLES))
@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_insert_values_are_exactly_the_models_whatever_the_message(topic: str, data: st.DataObject) -> None:
    """The fast path accepts nothing the model refuses and changes no value the model keeps."""
    table = TABLE_BY_TOPIC[topic]
    doc = json.loads(SAMPLES[topic].to_json_bytes())  # type: ignore[attr-defined]
    for _ in range(data.draw(st.integers(1, 3))):
        op = data.draw(st.sampled_from(["set", "drop", "extra", "shuffle"]))
        if op == "set":
            key = data.draw(st.sampled_from(sorted(doc) or ["x"]))
            doc[key] = data.draw(near(doc.get(key)))
        elif op == "drop" and doc:
            del doc[data.draw(st.sampled_from(sorted(doc)))]
        elif op == "extra":
            doc[data.draw(st.text(max_size=3))] = data.draw(json_values)
        else:
            doc = dict(data.draw(st.permutations(list(doc.items()))))
    value = json.dumps(doc).encode()
    assert_same_answer(table, value)


@pytest.mark.parametrize("topic", sorted(SAMPLES))
def test_every_field_set_to_each_neighbouring_value_gives_the_models_answer(topic: str) -> None:
    table = TABLE_BY_TOPIC[topic]
    doc = json.loads(SAMPLES[topic].to_json_bytes())  # type: ignore[attr-defined]
    for key, original in doc.items():
        for other in neighbours(original):
            value = json.dumps({**doc, key: other}).encode()
            assert_same_answer(table, value, (key, other))
        without = json.dumps({k: v for k, v in doc.items() if k != key}).encode()
        assert_same_answer(table, without, key)


def test_times_become_the_ticks_clickhouse_connect_would_insert() -> None:
    table = TABLE_BY_TOPIC[topics.WINDOWS]
    doc = json.loads(window().to_json_bytes())
    for text in TIMES:
        value = json.dumps({**doc, "emitted_at": text}).encode()
        assert insert_or_reason(table, value) == model_or_reason(table, value), text
    assert datetime_ticks(datetime(1970, 1, 1, 0, 0, 1, 999, tzinfo=UTC)) == 1000
    assert iso_z_ticks("1969-12-31T23:59:59.9995Z") == -1  # floor, as clickhouse-connect
