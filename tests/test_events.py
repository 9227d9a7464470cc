"""The canonical event: validation, wire format and the committed JSON Schema."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from pipeline.events import SCHEMA_PATH, CanonicalEvent, json_schema_text, stable_event_id


def _event(**overrides: object) -> CanonicalEvent:
    fields: dict[str, object] = {
        "event_id": "e1",
        "platform": "slack",
        "space_id": "T1",
        "community_id": "slack:T1:C1",
        "kind": "reply",
        "actor_id": "U1",
        "occurred_at": "2024-05-01T12:00:00.123456Z",
    }
    fields.update(overrides)
    return CanonicalEvent.model_validate(fields)


def test_committed_schema_matches_the_model() -> None:
    # regenerate with `pulse schema` when the model changes on purpose
    assert SCHEMA_PATH.read_text(encoding="utf-8") == json_schema_text()


def test_wire_format_uses_design_field_names_and_ms_utc() -> None:
    event = _event(occurred_at=datetime(2024, 5, 1, 14, 0, 0, 999999, tzinfo=timezone(timedelta(hours=2))))
    wire = json.loads(event.to_json_bytes())
    assert set(wire) == {
        "event_id",
        "platform",
        "space_id",
        "community_id",
        "kind",
        "actor_id",
        "actor_type",
        "thread_id",
        "parent_id",
        "parent_actor_id",
        "occurred_at",
        "received_at",
    }
    assert wire["occurred_at"] == "2024-05-01T12:00:00.999Z"
    assert wire["actor_type"] == "human"


def test_naive_times_and_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="time zone"):
        _event(occurred_at="2024-05-01T12:00:00")
    with pytest.raises(ValidationError, match="extra"):
        _event(colour="blue")
    with pytest.raises(ValidationError):
        _event(actor_type="robot")
    with pytest.raises(ValidationError):
        _event(kind="Not A Kind!")


def test_other_kinds_are_accepted() -> None:
    assert _event(kind="poll_voted").kind == "poll_voted"


@given(
    occurred=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
    actor=st.text(min_size=1, max_size=20),
)
def test_round_trip_through_wire_format(occurred: datetime, actor: str) -> None:
    event = _event(occurred_at=occurred, actor_id=actor)
    again = CanonicalEvent.from_json_bytes(event.to_json_bytes())
    assert again == event
    assert again.occurred_ms == int(event.occurred_at.timestamp() * 1000)


def test_stable_event_id_depends_only_on_parts() -> None:
    assert stable_event_id("discourse", "https://f", 5) == stable_event_id("discourse", "https://f", 5)
    assert stable_event_id("discourse", "https://f", 5) != stable_event_id("discourse", "https://f", 6)
    assert stable_event_id("a", "bc") != stable_event_id("ab", "c")
