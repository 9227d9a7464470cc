"""Slack Events API envelopes -> canonical events.

Identity (see docs/platforms.md):

- ``space_id``: the envelope ``team_id`` (the workspace).
- ``community_id``: ``slack:<team_id>:<channel>`` (e.g. ``slack:T06NRA6HM3P:C06NRA6JLER``).
- ``thread_id``: the ``ts`` of the thread's root message (``thread_ts`` for replies);
  ``parent_id`` of a reply is the root ``ts``, of a reaction the reacted message's ``ts``.
- ``event_id``: from the message itself, not the envelope ``event_id`` (older
  payloads have none): ``stable_event_id("slack", team, channel, "message", ts)``;
  reactions ``(..., "reaction", item.ts, user, reaction)``; joins and leaves
  ``(..., "member_joined"|"member_left", user, minute)``: Slack sends both a
  ``channel_join`` message and a ``member_joined_channel`` event for one join, with
  timestamps that need not be equal, and both must count once.
- ``occurred_at``: ``event.ts`` (``event_ts`` for reactions and membership events).
- ``actor_type``: ``bot`` when the message has a ``bot_id``, the ``bot_message``
  subtype, or comes from the app's own bot user (``authorizations[].is_bot``).
  Slack payloads say nothing about staff.

Kinds: message (no subtype, ``thread_broadcast``, ``file_share``, ``me_message``,
``bot_message``) -> thread_started when top-level (no ``thread_ts`` or ``thread_ts
== ts``), else reply with ``parent_actor_id = parent_user_id``; ``channel_join`` and
``member_joined_channel`` -> member_joined; ``channel_leave`` and
``member_left_channel`` -> member_left; ``reaction_added`` -> reaction.
``url_verification`` -> the challenge. Ignored: direct messages (``channel_type``
im/mpim, or ``D…`` channels), edits, deletions, other subtypes and events.
"""

from __future__ import annotations

from pipeline.events import CanonicalEvent, Kind, stable_event_id

from ._base import (
    Adapted,
    Delivery,
    Json,
    PayloadError,
    epoch_time,
    load_body,
    make_event,
    obj,
    opt_text,
    text,
    type_name,
)

POSTING_SUBTYPES = frozenset({"thread_broadcast", "file_share", "me_message", "bot_message"})
DIRECT_CHANNEL_TYPES = frozenset({"im", "mpim"})


def _bot_users(data: Json) -> frozenset[str]:
    """User ids of the app's own bot users, from ``authorizations`` (newer payloads)."""
    value = data.get("authorizations")
    if value is None:
        return frozenset()
    if not isinstance(value, list):
        raise PayloadError("authorizations", f"must be an array, got {type_name(value)}")
    users = set()
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise PayloadError(f"authorizations.{i}", f"must be an object, got {type_name(item)}")
        if item.get("is_bot") is True and isinstance(item.get("user_id"), str):
            users.add(item["user_id"])
    return frozenset(users)


def _is_direct(channel: str, channel_type: str | None) -> bool:
    return channel_type in DIRECT_CHANNEL_TYPES or channel.startswith("D")


class _Context:
    def __init__(self, delivery: Delivery, data: Json) -> None:
        self.delivery = delivery
        self.team = text(data, "team_id")
        self.bots = _bot_users(data)

    def event(self, channel: str, **fields: object) -> CanonicalEvent:
        return make_event(
            platform="slack",
            space_id=self.team,
            community_id=f"slack:{self.team}:{channel}",
            received_at=self.delivery.received_at,
            **fields,
        )

    def membership(self, data: Json, kind: Kind, user_path: str, ts_path: str) -> Adapted:
        channel = text(data, "event.channel")
        if _is_direct(channel, opt_text(data, "event.channel_type")):
            return Adapted(ignored="direct message")
        user = text(data, user_path)
        at = epoch_time(data, ts_path)
        minute = int(at.timestamp()) // 60
        event = self.event(
            channel,
            event_id=stable_event_id("slack", self.team, channel, kind.value, user, minute),
            kind=kind.value,
            actor_id=user,
            actor_type="bot" if user in self.bots else "human",
            occurred_at=at,
        )
        return Adapted(events=(event,))


def _message(ctx: _Context, data: Json) -> Adapted:
    subtype = opt_text(data, "event.subtype")
    if subtype == "channel_join":
        return ctx.membership(data, Kind.MEMBER_JOINED, "event.user", "event.ts")
    if subtype == "channel_leave":
        return ctx.membership(data, Kind.MEMBER_LEFT, "event.user", "event.ts")
    channel = text(data, "event.channel")
    if _is_direct(channel, opt_text(data, "event.channel_type")):
        return Adapted(ignored="direct message")
    if subtype == "message_changed":
        return Adapted(ignored="edit")
    if subtype == "message_deleted":
        return Adapted(ignored="delete")
    if subtype is not None and subtype not in POSTING_SUBTYPES:
        return Adapted(ignored=f"unsupported message subtype: {subtype[:64]}")
    ts = text(data, "event.ts")
    at = epoch_time(data, "event.ts")
    bot_id = opt_text(data, "event.bot_id")
    user = opt_text(data, "event.user")
    actor = user or bot_id
    if actor is None:
        raise PayloadError("event.user", "a message needs a user or a bot_id")
    is_bot = bot_id is not None or subtype == "bot_message" or actor in ctx.bots
    thread_ts = opt_text(data, "event.thread_ts")
    fields: dict[str, object] = {
        "event_id": stable_event_id("slack", ctx.team, channel, "message", ts),
        "actor_id": actor,
        "actor_type": "bot" if is_bot else "human",
        "occurred_at": at,
    }
    if thread_ts is None or thread_ts == ts:
        event = ctx.event(channel, kind=Kind.THREAD_STARTED.value, thread_id=ts, **fields)
    else:
        epoch_time(data, "event.thread_ts")  # must be a message ts too
        event = ctx.event(
            channel,
            kind=Kind.REPLY.value,
            thread_id=thread_ts,
            parent_id=thread_ts,
            parent_actor_id=opt_text(data, "event.parent_user_id"),
            **fields,
        )
    return Adapted(events=(event,))


def _reaction_added(ctx: _Context, data: Json) -> Adapted:
    obj(data, "event.item")
    if text(data, "event.item.type") != "message":
        return Adapted(ignored="reaction on a file")
    channel = text(data, "event.item.channel")
    if _is_direct(channel, None):
        return Adapted(ignored="direct message")
    user = text(data, "event.user")
    item_ts = text(data, "event.item.ts")
    epoch_time(data, "event.item.ts")
    reaction = text(data, "event.reaction")
    event = ctx.event(
        channel,
        event_id=stable_event_id("slack", ctx.team, channel, "reaction", item_ts, user, reaction),
        kind=Kind.REACTION.value,
        actor_id=user,
        actor_type="bot" if user in ctx.bots else "human",
        parent_id=item_ts,
        parent_actor_id=opt_text(data, "event.item_user"),
        occurred_at=epoch_time(data, "event.event_ts"),
    )
    return Adapted(events=(event,))


def adapt_slack(delivery: Delivery) -> Adapted:
    data = load_body(delivery.body, delivery.headers)
    envelope = text(data, "type")
    if envelope == "url_verification":
        return Adapted(ignored="url verification", challenge=text(data, "challenge"))
    if envelope != "event_callback":
        return Adapted(ignored=f"unsupported event: {envelope[:64]}")
    delivery_id = opt_text(data, "event_id")
    ctx = _Context(delivery, data)
    obj(data, "event")
    kind = text(data, "event.type")
    if kind == "message":
        adapted = _message(ctx, data)
    elif kind == "reaction_added":
        adapted = _reaction_added(ctx, data)
    elif kind == "member_joined_channel":
        adapted = ctx.membership(data, Kind.MEMBER_JOINED, "event.user", "event.event_ts")
    elif kind == "member_left_channel":
        adapted = ctx.membership(data, Kind.MEMBER_LEFT, "event.user", "event.event_ts")
    else:
        adapted = Adapted(ignored=f"unsupported event: {kind[:64]}")
    return Adapted(events=adapted.events, ignored=adapted.ignored, delivery_id=delivery_id)
