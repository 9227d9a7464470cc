"""Messages -> rows: every topic's model, and the reasons given for what cannot be stored."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from storage_samples import event, first_response, health, window

from pipeline import topics
from pipeline.storage.rows import TABLE_BY_TOPIC, TABLES, RowError, tables_by_topic


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
