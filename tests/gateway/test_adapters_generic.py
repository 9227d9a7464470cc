"""The generic API's body: JSON array or NDJSON of canonical events."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.gateway.adapters import MAX_ITEMS, PayloadError, UnsupportedMediaType, adapt_generic

RECEIVED = datetime(2026, 11, 23, 12, 0, 0, 123000, tzinfo=UTC)


def _item(n: int = 0, **overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "event_id": f"e{n}",
        "platform": "intranet",
        "space_id": "acme",
        "community_id": "intranet:acme:general",
        "kind": "thread_started",
        "actor_id": f"u{n % 3}",
        "thread_id": f"t{n}",
        "occurred_at": "2026-11-20T08:00:00.250Z",
    }
    item.update(overrides)
    return item


def test_json_array_is_validated_and_stamped() -> None:
    sent = [_item(0), _item(1, kind="reply", parent_id="t0", received_at="2001-01-01T00:00:00Z")]
    events = adapt_generic(json.dumps(sent).encode(), "application/json; charset=utf-8", "tester", RECEIVED)
    assert [e.event_id for e in events] == ["e0", "e1"]
    assert all(e.received_at == RECEIVED for e in events)  # the sender's value is replaced
    assert events[0].occurred_at == datetime(2026, 11, 20, 8, 0, 0, 250000, tzinfo=UTC)
    assert events[1].kind == "reply" and events[1].parent_id == "t0"


def test_ndjson_with_blank_lines() -> None:
    body = "\n".join([json.dumps(_item(0)), "", json.dumps(_item(1)), ""]).encode()
    events = adapt_generic(body, "application/x-ndjson", "tester", RECEIVED)
    assert [e.event_id for e in events] == ["e0", "e1"]


def test_platform_defaults_to_the_sender() -> None:
    item = _item(0)
    del item["platform"]
    (event,) = adapt_generic(json.dumps([item]).encode(), "application/json", "tester", RECEIVED)
    assert event.platform == "tester"


def test_single_object_and_empty_array() -> None:
    assert len(adapt_generic(json.dumps(_item()).encode(), "application/json", "s", RECEIVED)) == 1
    assert adapt_generic(b"[]", "application/json", "s", RECEIVED) == []


@pytest.mark.parametrize(
    ("items", "field"),
    [
        ([_item(0), _item(1, occurred_at="2026-11-20T08:00:00")], "items[1].occurred_at"),
        ([_item(0), _item(1), {**_item(2), "colour": "red"}], "items[2].colour"),
        ([_item(0, actor_type="robot")], "items[0].actor_type"),
        ([_item(0, event_id="")], "items[0].event_id"),
        ([_item(0), 5], "items[1]"),
        ([{k: v for k, v in _item(0).items() if k != "kind"}], "items[0].kind"),
    ],
)
def test_errors_name_the_item_and_field(items: list[Any], field: str) -> None:
    with pytest.raises(PayloadError) as info:
        adapt_generic(json.dumps(items).encode(), "application/json", "s", RECEIVED)
    assert info.value.field == field


def test_ndjson_bad_line_is_named() -> None:
    body = (json.dumps(_item(0)) + "\n{oops\n").encode()
    with pytest.raises(PayloadError) as info:
        adapt_generic(body, "application/x-ndjson", "s", RECEIVED)
    assert info.value.field == "items[1]"


def test_item_limit() -> None:
    body = json.dumps([_item(i) for i in range(MAX_ITEMS + 1)]).encode()
    with pytest.raises(PayloadError, match="too many events"):
        adapt_generic(body, "application/json", "s", RECEIVED)
    ndjson = b"\n".join(json.dumps(_item(i)).encode() for i in range(MAX_ITEMS + 1))
    with pytest.raises(PayloadError, match="too many events"):
        adapt_generic(ndjson, "application/x-ndjson", "s", RECEIVED)


def test_other_content_types_are_unsupported() -> None:
    with pytest.raises(UnsupportedMediaType):
        adapt_generic(b"[]", "text/plain", "s", RECEIVED)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["application/json", "application/x-ndjson"]))
def test_arbitrary_bytes_only_raise_payload_error(body: bytes, content_type: str) -> None:
    with contextlib.suppress(PayloadError):
        adapt_generic(body, content_type, "s", RECEIVED)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from([*_item(0), "received_at", "parent_actor_id"]),
            st.none() | st.integers() | st.text(max_size=30) | st.booleans(),
        ),
        max_size=3,
    )
)
def test_arbitrary_items_only_raise_payload_error(items: list[dict[str, Any]]) -> None:
    try:
        events = adapt_generic(json.dumps(items).encode(), "application/json", "s", RECEIVED)
    except PayloadError as exc:
        assert exc.field.startswith("items[")
    else:
        assert len(events) == len(items)
