"""The canonical event: what every platform payload becomes (DESIGN.md, "Canonical event").

On Kafka it travels as its UTF-8 JSON with exactly these field names; its JSON
Schema is exported to ``schemas/canonical_event.schema.json`` (``pulse schema``)
and a test fails when the committed file drifts from this model.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_serializer


class Kind(StrEnum):
    """Kinds that move engagement. Other kinds are accepted and counted only."""

    THREAD_STARTED = "thread_started"
    REPLY = "reply"
    REACTION = "reaction"
    MEMBER_JOINED = "member_joined"
    MEMBER_LEFT = "member_left"
    ANSWER_ACCEPTED = "answer_accepted"


ENGAGEMENT_KINDS: frozenset[str] = frozenset(k.value for k in Kind)
POST_KINDS: frozenset[str] = frozenset({Kind.THREAD_STARTED, Kind.REPLY})

ActorType = Literal["human", "bot", "staff"]


def _utc_ms(value: datetime) -> datetime:
    """Event times are UTC with millisecond precision; a naive time is refused."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must carry a time zone (e.g. 2024-05-01T12:00:00Z)")
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


UtcTime = Annotated[datetime, AfterValidator(_utc_ms)]
Id = Annotated[str, Field(min_length=1, max_length=256)]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_.-]*$")]


def _now() -> datetime:
    return _utc_ms(datetime.now(UTC))


class CanonicalEvent(BaseModel):
    """One real-world action in a community, normalized from any platform."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        title="CanonicalEvent",
        json_schema_extra={"$id": "https://community-pulse.dev/schemas/canonical_event.schema.json"},
    )

    event_id: Id = Field(
        description="Stable id for deduplication: the same real-world action always gets the same id, "
        "whatever delivery or retry carried it."
    )
    platform: Name = Field(description="github, discourse, slack, or the name a generic sender declares.")
    space_id: Id = Field(description="The instance, workspace or organisation.")
    community_id: Id = Field(
        description="The unit ops watch: a Discourse category, a Slack channel, a GitHub repository's "
        "discussions (after the mapping file's renames and groups)."
    )
    kind: Name = Field(
        description="thread_started, reply, reaction, member_joined, member_left, answer_accepted; "
        "other kinds are accepted and counted but do not move engagement.",
        examples=sorted(ENGAGEMENT_KINDS),
    )
    actor_id: Id = Field(description="Platform user id of who acted.")
    actor_type: ActorType = Field(
        default="human", description="human, bot or staff; bots never count as responders or posters."
    )
    thread_id: Id | None = Field(default=None, description="The thread the event belongs to.")
    parent_id: Id | None = Field(default=None, description="The item replied or reacted to.")
    parent_actor_id: Id | None = Field(default=None, description="Author of the parent item, when the payload says so.")
    occurred_at: UtcTime = Field(description="Event time from the payload (UTC, millisecond precision).")
    received_at: UtcTime = Field(default_factory=_now, description="When the gateway accepted the delivery (UTC, ms).")

    @field_serializer("occurred_at", "received_at")
    def _iso_ms(self, value: datetime) -> str:
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"

    # --- wire format -------------------------------------------------------

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=False).encode("utf-8")

    @classmethod
    def from_json_bytes(cls, data: bytes | str) -> CanonicalEvent:
        return cls.model_validate_json(data)

    # --- derived -----------------------------------------------------------

    @property
    def occurred_ms(self) -> int:
        return int(self.occurred_at.timestamp() * 1000)

    @property
    def is_post(self) -> bool:
        return self.kind in POST_KINDS

    @property
    def is_human(self) -> bool:
        return self.actor_type != "bot"


def stable_event_id(*parts: object) -> str:
    """An id derived from what identifies the action, never from the delivery."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).hexdigest()
    return digest[:32]


SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "canonical_event.schema.json"


def json_schema() -> dict[str, Any]:
    return CanonicalEvent.model_json_schema(mode="serialization")


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
