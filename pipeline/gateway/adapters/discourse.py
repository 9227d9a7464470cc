"""Discourse webhooks (``X-Discourse-Event``) -> canonical events.

Identity (see docs/platforms.md):

- ``space_id``: the ``X-Discourse-Instance`` header (the forum's base URL without
  a trailing ``/``). The body never names the forum, so a delivery without this
  header is refused (PayloadError).
- ``community_id``: ``discourse:<host>:<category_id>`` (e.g. ``discourse:forum.a:1``);
  member joins are site-wide (Discourse has no category membership):
  ``discourse:<host>``.
- ``thread_id``: ``topic:<topic_id>``; a reply's ``parent_id`` is
  ``topic:<topic_id>#<reply_to_post_number>`` (a post number inside the topic, not a
  post id) or the topic itself when the reply is to the topic or to post #1.
  ``parent_actor_id`` is ``reply_to_user.id`` when the payload carries it (older
  Discourse sends only a username there, which is not an id, so it is left out).
- ``event_id``: from the action, never from ``X-Discourse-Event-Id`` (a new one per
  retry): ``stable_event_id("discourse", instance, "topic", topic_id, "started")``
  for an opening post, ``("discourse", instance, "post", post.id, "created")`` for a
  reply, ``("discourse", instance, "user", user.id, "created")`` for a join.
- ``actor_type``: ``bot`` for ``user_id <= 0`` (system -1, discobot -2), ``staff``
  when ``staff``/``admin``/``moderator`` is true, else ``human``.

Kinds: ``post_created`` with ``post_number`` 1 -> thread_started, else reply;
``user_created`` -> member_joined. Ignored with a reason: private messages (and
posts without a category), whispers and small-action posts, edits,
``topic_created`` (its opening post also arrives as ``post_created`` #1, which is
what counts, so a thread is never counted twice), staged users, ``ping``.
"""

from __future__ import annotations

from pipeline.events import CanonicalEvent, Kind, stable_event_id

from ._base import (
    Adapted,
    Delivery,
    Json,
    PayloadError,
    flag,
    header,
    host_of,
    ident,
    integer,
    iso_time,
    load_body,
    make_event,
    obj,
    opt_integer,
    opt_obj,
    opt_text,
)

REGULAR_POST_TYPE = 1  # 2 moderator action, 3 small action ("closed this topic"), 4 whisper


def _instance(delivery: Delivery) -> str:
    raw = header(delivery.headers, "x-discourse-instance")
    if raw is None or not raw.strip():
        raise PayloadError("X-Discourse-Instance", "missing header (it is the only place naming the forum)")
    value = raw.strip().rstrip("/")
    if len(value) > 200 or any(c.isspace() for c in value) or not host_of(value):
        raise PayloadError("X-Discourse-Instance", "must be the forum's base URL")
    return value


def _actor_type(data: Json, prefix: str, user_id: int) -> str:
    if user_id <= 0:
        return "bot"
    if any(flag(data, f"{prefix}.{name}") for name in ("staff", "admin", "moderator")):
        return "staff"
    return "human"


def _event(delivery: Delivery, instance: str, community: str, **fields: object) -> CanonicalEvent:
    return make_event(
        platform="discourse",
        space_id=instance,
        community_id=community,
        received_at=delivery.received_at,
        **fields,
    )


def _post_created(delivery: Delivery, instance: str, data: Json) -> Adapted:
    obj(data, "post")
    archetype = opt_text(data, "post.topic_archetype")
    if archetype == "private_message":
        return Adapted(ignored="private message")
    category = opt_integer(data, "post.category_id")
    if category is None:
        # only private messages lack a category; never publish what might be one
        return Adapted(ignored="private message")
    post_type = opt_integer(data, "post.post_type")
    if post_type is not None and post_type != REGULAR_POST_TYPE:
        return Adapted(ignored="whisper" if post_type == 4 else f"post type {post_type}")
    topic_id = str(integer(data, "post.topic_id"))
    post_number = integer(data, "post.post_number")
    user_id = integer(data, "post.user_id")
    common: dict[str, object] = {
        "actor_id": str(user_id),
        "actor_type": _actor_type(data, "post", user_id),
        "thread_id": f"topic:{topic_id}",
        "occurred_at": iso_time(data, "post.created_at"),
    }
    community = f"discourse:{host_of(instance)}:{category}"
    if post_number == 1:
        event = _event(
            delivery,
            instance,
            community,
            event_id=stable_event_id("discourse", instance, "topic", topic_id, "started"),
            kind=Kind.THREAD_STARTED.value,
            **common,
        )
        return Adapted(events=(event,))
    reply_to = opt_integer(data, "post.reply_to_post_number")
    parent_id = f"topic:{topic_id}" if reply_to in (None, 1) else f"topic:{topic_id}#{reply_to}"
    parent_actor = None
    if reply_to is not None and opt_obj(data, "post.reply_to_user") is not None:
        value = data["post"]["reply_to_user"].get("id")
        if value is not None:
            parent_actor = str(integer(data, "post.reply_to_user.id"))
    event = _event(
        delivery,
        instance,
        community,
        event_id=stable_event_id("discourse", instance, "post", integer(data, "post.id"), "created"),
        kind=Kind.REPLY.value,
        parent_id=parent_id,
        parent_actor_id=parent_actor,
        **common,
    )
    return Adapted(events=(event,))


def _user_created(delivery: Delivery, instance: str, data: Json) -> Adapted:
    obj(data, "user")
    user_id = integer(data, "user.id")
    if flag(data, "user.staged"):
        return Adapted(ignored="staged user")
    event = _event(
        delivery,
        instance,
        f"discourse:{host_of(instance)}",
        event_id=stable_event_id("discourse", instance, "user", user_id, "created"),
        kind=Kind.MEMBER_JOINED.value,
        actor_id=str(user_id),
        actor_type=_actor_type(data, "user", user_id),
        occurred_at=iso_time(data, "user.created_at"),
    )
    return Adapted(events=(event,))


def _topic_created(delivery: Delivery, instance: str, data: Json) -> Adapted:
    obj(data, "topic")
    ident(data, "topic.id")
    if opt_text(data, "topic.archetype") == "private_message":
        return Adapted(ignored="private message")
    return Adapted(ignored="topic_created: the thread start is counted from post_created #1")


def adapt_discourse(delivery: Delivery) -> Adapted:
    instance = _instance(delivery)
    event_name = (header(delivery.headers, "x-discourse-event") or "").strip()
    if not event_name:
        raise PayloadError("X-Discourse-Event", "missing header")
    delivery_id = header(delivery.headers, "x-discourse-event-id")
    data = load_body(delivery.body, delivery.headers)
    if event_name == "ping":
        adapted = Adapted(ignored="ping")
    elif event_name == "post_created":
        adapted = _post_created(delivery, instance, data)
    elif event_name == "user_created":
        adapted = _user_created(delivery, instance, data)
    elif event_name == "topic_created":
        adapted = _topic_created(delivery, instance, data)
    elif event_name.endswith("_edited"):
        adapted = Adapted(ignored="edit")
    else:
        adapted = Adapted(ignored=f"unsupported event: {event_name[:64]}")
    return Adapted(events=adapted.events, ignored=adapted.ignored, delivery_id=delivery_id)
