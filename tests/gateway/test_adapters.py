"""Adapters on every recorded fixture, and properties: only Adapted or PayloadError."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.events import CanonicalEvent, stable_event_id
from pipeline.gateway.adapters import Adapted, Delivery, PayloadError, adapt

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "webhooks"
RECEIVED = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

# X-Discourse-Instance / -Event-Id as recorded with each fixture (discourse/HEADERS.md)
DISCOURSE_RECORDED = {
    "post_created__1": ("http://forum.a", "12"),
    "post_created__2": ("http://forum.a", "13"),
    "post_created__3": ("http://172.25.25.203", "47"),
    "topic_created__1": ("http://172.25.25.203", "5"),
    "user_created__1": ("http://172.25.25.203", "28"),
    "ping__1": ("http://172.25.25.203", "183"),
    "post_edited__1": ("https://ask.fedoraproject.org", "83176"),
}


def fixture_names() -> list[tuple[str, str]]:
    return sorted((p.parent.name, p.stem) for p in FIXTURES.glob("*/*.json"))


def fixture_body(platform: str, name: str) -> bytes:
    return (FIXTURES / platform / f"{name}.json").read_bytes()


def compact(body: bytes) -> bytes:
    """The wire form Discourse sends (compact, UTF-8 unescaped), see discourse/HEADERS.md."""
    return json.dumps(json.loads(body), separators=(",", ":"), ensure_ascii=False).encode()


def fixture_headers(platform: str, name: str) -> dict[str, str]:
    event = name.split("__")[0]
    headers = {"content-type": "application/json"}
    if platform == "github":
        headers |= {"x-github-event": event, "x-github-delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"}
    elif platform == "discourse":
        instance, event_id = DISCOURSE_RECORDED[name]
        headers |= {
            "x-discourse-instance": instance,
            "x-discourse-event-id": event_id,
            "x-discourse-event": event,
            "x-discourse-event-type": next(iter(json.loads(fixture_body(platform, name)))),
        }
    return headers


def fixture_delivery(platform: str, name: str, body: bytes | None = None) -> Delivery:
    return Delivery(
        platform=platform,
        headers=fixture_headers(platform, name),
        body=fixture_body(platform, name) if body is None else body,
        received_at=RECEIVED,
    )


def _one(adapted: Adapted) -> CanonicalEvent:
    assert adapted.ignored is None and adapted.challenge is None
    assert len(adapted.events) == 1
    return adapted.events[0]


def _adapt_fixture(platform: str, name: str, body: bytes | None = None) -> Adapted:
    return adapt(fixture_delivery(platform, name, body))


def _edited(platform: str, name: str, change: Any) -> bytes:
    data = json.loads(fixture_body(platform, name))
    change(data)
    return json.dumps(data).encode()


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


# ------------------------------------------------------------------ GitHub

REPO_ID = "186853002"
GITHUB_COMMUNITY = "github:Codertocat/Hello-World"


def test_github_discussion_created_starts_a_thread() -> None:
    adapted = _adapt_fixture("github", "discussion__1")
    event = _one(adapted)
    assert adapted.delivery_id == "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    assert (event.platform, event.space_id, event.community_id) == ("github", "Codertocat", GITHUB_COMMUNITY)
    assert event.kind == "thread_started"
    assert event.thread_id == "discussion:3299614"
    assert (event.parent_id, event.parent_actor_id) == (None, None)
    assert event.actor_id == "21031067"
    assert event.actor_type == "staff"  # author_association OWNER
    assert event.occurred_at == _utc("2021-03-30T20:09:52Z")
    assert event.received_at == RECEIVED
    assert event.event_id == stable_event_id("github", REPO_ID, "discussion", "3299614", "created")


def test_github_discussion_answered_is_answer_accepted_by_the_chooser() -> None:
    event = _one(_adapt_fixture("github", "discussion__2"))
    assert event.kind == "answer_accepted"
    assert event.thread_id == "discussion:3299614"
    assert event.actor_id == "4595477"  # answer_chosen_by, not the answer's author
    assert event.parent_id == "discussion_comment:550561"
    assert event.parent_actor_id == "1253226"
    assert event.occurred_at == _utc("2021-03-30T23:17:18Z")  # -04:00 offset in the payload


def test_github_discussion_comment_replies_to_the_discussion() -> None:
    event = _one(_adapt_fixture("github", "discussion_comment__1"))
    assert event.kind == "reply"
    assert event.thread_id == "discussion:3299614"
    assert event.parent_id == "discussion:3299614"
    assert event.parent_actor_id == "21031067"
    assert event.actor_id == "21031067"
    assert event.occurred_at == _utc("2021-03-30T20:21:30Z")
    assert event.event_id == stable_event_id("github", REPO_ID, "discussion_comment", "550062", "created")


def test_github_nested_discussion_reply_points_at_the_parent_comment() -> None:
    body = _edited("github", "discussion_comment__1", lambda d: d["comment"].update(parent_id=550001))
    event = _one(_adapt_fixture("github", "discussion_comment__1", body))
    assert event.parent_id == "discussion_comment:550001"
    assert event.parent_actor_id is None
    assert event.thread_id == "discussion:3299614"


def test_github_issue_opened_and_comment() -> None:
    opened = _one(_adapt_fixture("github", "issues__1"))
    assert opened.kind == "thread_started"
    assert (opened.space_id, opened.community_id) == ("Codertocat", GITHUB_COMMUNITY)
    assert opened.thread_id == "issue:444500041"
    assert opened.occurred_at == _utc("2019-05-15T15:20:18Z")
    comment = _one(_adapt_fixture("github", "issue_comment__1"))
    assert comment.kind == "reply"
    assert comment.thread_id == comment.parent_id == "issue:444500041"
    assert comment.parent_actor_id == "21031067"
    assert comment.occurred_at == _utc("2019-05-15T15:20:21Z")


def test_github_organization_is_the_space_and_the_action_keeps_its_id() -> None:
    user_owned = _one(_adapt_fixture("github", "issues__1"))
    org_owned = _one(_adapt_fixture("github", "issues__2"))
    assert org_owned.space_id == "Octocoders"
    # the same issue opening, delivered by another hook: one action, one id
    assert org_owned.event_id == user_owned.event_id


def test_github_bot_user_is_a_bot() -> None:
    def make_bot(d: dict[str, Any]) -> None:
        d["comment"]["user"]["type"] = "Bot"
        d["comment"]["author_association"] = "NONE"

    event = _one(_adapt_fixture("github", "issue_comment__1", _edited("github", "issue_comment__1", make_bot)))
    assert event.actor_type == "bot"


def test_github_outside_contributor_is_human() -> None:
    body = _edited("github", "issues__1", lambda d: d["issue"].update(author_association="NONE"))
    assert _one(_adapt_fixture("github", "issues__1", body)).actor_type == "human"


@pytest.mark.parametrize(("name", "reason"), [("discussion__3", "edit"), ("ping__1", "ping")])
def test_github_ignored_fixtures(name: str, reason: str) -> None:
    adapted = _adapt_fixture("github", name)
    assert adapted.events == ()
    assert adapted.ignored == reason


def test_github_other_actions_events_and_pull_requests_are_ignored_with_a_reason() -> None:
    closed = _edited("github", "issues__1", lambda d: d.update(action="closed"))
    assert _adapt_fixture("github", "issues__1", closed).ignored == "unsupported action: issues.closed"
    pr = _edited("github", "issue_comment__1", lambda d: d["issue"].update(pull_request={"url": "x"}))
    assert _adapt_fixture("github", "issue_comment__1", pr).ignored == "pull request comment"
    delivery = fixture_delivery("github", "issues__1")
    star = Delivery("github", {**delivery.headers, "x-github-event": "star"}, delivery.body, RECEIVED)
    assert adapt(star).ignored == "unsupported event: star"


def test_github_form_encoded_payload_gives_the_same_event() -> None:
    from urllib.parse import urlencode

    body = urlencode({"payload": fixture_body("github", "issues__1").decode()}).encode()
    delivery = fixture_delivery("github", "issues__1", body)
    form = Delivery("github", {**delivery.headers, "content-type": "application/x-www-form-urlencoded"}, body, RECEIVED)
    assert adapt(form).events == _adapt_fixture("github", "issues__1").events


def test_github_without_event_header_is_a_payload_error() -> None:
    delivery = fixture_delivery("github", "issues__1")
    headers = {k: v for k, v in delivery.headers.items() if k != "x-github-event"}
    with pytest.raises(PayloadError) as info:
        adapt(Delivery("github", headers, delivery.body, RECEIVED))
    assert info.value.field == "X-GitHub-Event"


# --------------------------------------------------------------- Discourse


def test_discourse_opening_post_starts_the_thread() -> None:
    adapted = _adapt_fixture("discourse", "post_created__1")
    event = _one(adapted)
    assert adapted.delivery_id == "12"
    assert (event.platform, event.space_id) == ("discourse", "http://forum.a")
    assert event.community_id == "discourse:forum.a:1"
    assert event.kind == "thread_started"
    assert event.thread_id == "topic:11"
    assert event.actor_id == "1"
    assert event.actor_type == "staff"
    assert event.occurred_at == _utc("2023-01-15T19:29:25.790Z")
    assert event.event_id == stable_event_id("discourse", "http://forum.a", "topic", "11", "started")


def test_discourse_second_post_replies_to_the_topic() -> None:
    event = _one(_adapt_fixture("discourse", "post_created__2"))
    assert event.kind == "reply"
    assert event.community_id == "discourse:forum.a:1"
    assert event.thread_id == event.parent_id == "topic:11"
    assert event.parent_actor_id is None
    assert event.occurred_at == _utc("2023-01-15T19:30:27.230Z")
    assert event.event_id == stable_event_id("discourse", "http://forum.a", "post", 15, "created")


def test_discourse_2025_opening_post() -> None:
    event = _one(_adapt_fixture("discourse", "post_created__3"))
    assert (event.space_id, event.community_id) == ("http://172.25.25.203", "discourse:172.25.25.203:4")
    assert (event.kind, event.thread_id, event.actor_id) == ("thread_started", "topic:10", "1")
    assert event.occurred_at == _utc("2026-01-02T13:58:49.606Z")


def test_discourse_reply_to_a_post_number_resolves_inside_the_topic() -> None:
    def reply(d: dict[str, Any]) -> None:
        d["post"].update(reply_to_post_number=5, reply_to_user={"id": 77, "username": "x"})

    event = _one(_adapt_fixture("discourse", "post_created__2", _edited("discourse", "post_created__2", reply)))
    assert event.parent_id == "topic:11#5"
    assert event.parent_actor_id == "77"

    def username_only(d: dict[str, Any]) -> None:  # the shape of post_edited__1
        d["post"].update(reply_to_post_number=5, reply_to_user={"username": "computersavvy"})

    body = _edited("discourse", "post_created__2", username_only)
    event = _one(_adapt_fixture("discourse", "post_created__2", body))
    assert (event.parent_id, event.parent_actor_id) == ("topic:11#5", None)


def test_discourse_retry_with_a_new_event_id_keeps_the_event_id() -> None:
    first = _adapt_fixture("discourse", "post_created__2")
    delivery = fixture_delivery("discourse", "post_created__2", compact(fixture_body("discourse", "post_created__2")))
    retry = Delivery(
        "discourse", {**delivery.headers, "x-discourse-event-id": "99"}, delivery.body, RECEIVED + timedelta(minutes=5)
    )
    second = adapt(retry)
    assert second.delivery_id == "99" != first.delivery_id
    assert second.events[0].event_id == first.events[0].event_id
    assert second.events[0].occurred_at == first.events[0].occurred_at


@pytest.mark.parametrize(("user_id", "expected"), [(-1, "bot"), (-2, "bot"), (0, "bot"), (7, "human")])
def test_discourse_bots_by_user_id(user_id: int, expected: str) -> None:
    def change(d: dict[str, Any]) -> None:
        d["post"].update(user_id=user_id, staff=False, admin=False, moderator=False)

    body = _edited("discourse", "post_created__2", change)
    assert _one(_adapt_fixture("discourse", "post_created__2", body)).actor_type == expected


def test_discourse_moderator_is_staff() -> None:
    def change(d: dict[str, Any]) -> None:
        d["post"].update(user_id=9, staff=False, admin=False, moderator=True)

    body = _edited("discourse", "post_created__2", change)
    assert _one(_adapt_fixture("discourse", "post_created__2", body)).actor_type == "staff"


def test_discourse_private_messages_are_ignored() -> None:
    def pm(d: dict[str, Any]) -> None:
        d["post"].update(topic_archetype="private_message", category_id=None)

    adapted = _adapt_fixture("discourse", "post_created__2", _edited("discourse", "post_created__2", pm))
    assert (adapted.events, adapted.ignored) == ((), "private message")
    no_category = _edited("discourse", "post_created__1", lambda d: d["post"].update(category_id=None))
    assert _adapt_fixture("discourse", "post_created__1", no_category).ignored == "private message"


def test_discourse_user_created_is_a_site_wide_join() -> None:
    event = _one(_adapt_fixture("discourse", "user_created__1"))
    assert event.kind == "member_joined"
    assert (event.space_id, event.community_id) == ("http://172.25.25.203", "discourse:172.25.25.203")
    assert (event.actor_id, event.actor_type, event.thread_id) == ("4", "human", None)
    assert event.occurred_at == _utc("2025-12-31T10:58:17.185Z")


@pytest.mark.parametrize(
    ("name", "reason"),
    [("post_edited__1", "edit"), ("ping__1", "ping")],
)
def test_discourse_ignored_fixtures(name: str, reason: str) -> None:
    adapted = _adapt_fixture("discourse", name)
    assert (adapted.events, adapted.ignored) == ((), reason)


def test_discourse_topic_created_is_not_a_second_thread_start() -> None:
    adapted = _adapt_fixture("discourse", "topic_created__1")
    assert adapted.events == ()
    assert adapted.ignored is not None and "post_created" in adapted.ignored


def test_discourse_without_instance_header_is_a_payload_error() -> None:
    delivery = fixture_delivery("discourse", "post_created__1")
    headers = {k: v for k, v in delivery.headers.items() if k != "x-discourse-instance"}
    with pytest.raises(PayloadError) as info:
        adapt(Delivery("discourse", headers, delivery.body, RECEIVED))
    assert info.value.field == "X-Discourse-Instance"


def test_discourse_compact_wire_body_matches_recorded_length_and_events() -> None:
    wire = compact(fixture_body("discourse", "post_created__1"))
    assert len(wire) == 1946  # Content-Length recorded with the delivery
    assert _adapt_fixture("discourse", "post_created__1", wire) == _adapt_fixture("discourse", "post_created__1")


# ------------------------------------------------------------------- Slack


def test_slack_top_level_message_starts_a_thread() -> None:
    adapted = _adapt_fixture("slack", "message__1")
    event = _one(adapted)
    assert adapted.delivery_id == "Ev079SP4TP1P"
    assert (event.space_id, event.community_id) == ("T06NRA6HM3P", "slack:T06NRA6HM3P:C06NRA6JLER")
    assert (event.kind, event.thread_id, event.parent_id) == ("thread_started", "1719209506.817929", None)
    assert (event.actor_id, event.actor_type) == ("U06NU4E26M9", "human")
    assert event.occurred_at == datetime(2024, 6, 24, 6, 11, 46, 817000, tzinfo=UTC)
    assert event.event_id == stable_event_id("slack", "T06NRA6HM3P", "C06NRA6JLER", "message", "1719209506.817929")


def test_slack_bot_thread_reply() -> None:
    event = _one(_adapt_fixture("slack", "message__2"))
    assert event.kind == "reply"
    assert event.actor_type == "bot"
    assert event.thread_id == event.parent_id == "1664216109.798919"
    assert event.parent_actor_id == "U043H11ES4V"
    assert event.community_id == "slack:T043DB835ML:C043YJGBY49"
    assert event.occurred_at == datetime(2022, 9, 26, 18, 27, 50, 477000, tzinfo=UTC)


def test_slack_human_reply_and_root_with_thread_ts() -> None:
    def human(d: dict[str, Any]) -> None:
        del d["event"]["bot_id"], d["event"]["bot_profile"]
        d["event"]["user"] = "U0HUMAN"

    event = _one(_adapt_fixture("slack", "message__2", _edited("slack", "message__2", human)))
    assert (event.kind, event.actor_type, event.actor_id) == ("reply", "human", "U0HUMAN")

    def root(d: dict[str, Any]) -> None:
        d["event"]["thread_ts"] = d["event"]["ts"]

    event = _one(_adapt_fixture("slack", "message__1", _edited("slack", "message__1", root)))
    assert (event.kind, event.thread_id) == ("thread_started", "1719209506.817929")


def test_slack_channel_join_message_and_event_are_one_join() -> None:
    joined = _one(_adapt_fixture("slack", "message__3"))
    assert (joined.kind, joined.actor_id, joined.community_id) == (
        "member_joined",
        "U0442US8QGH",
        "slack:T043DB835ML:C043KSKGJUB",
    )
    assert joined.actor_type == "bot"  # the app's own bot user (authorizations[].is_bot)
    assert joined.occurred_at == datetime(2022, 9, 26, 20, 4, 45, 728000, tzinfo=UTC)
    envelope = json.loads(fixture_body("slack", "message__3"))
    twin = {
        **envelope,
        "event": {
            "type": "member_joined_channel",
            "user": "U0442US8QGH",
            "channel": "C043KSKGJUB",
            "channel_type": "C",
            "team": "T043DB835ML",
            "event_ts": "1664222685.900000",
        },
    }
    other = _one(adapt(Delivery("slack", {}, json.dumps(twin).encode(), RECEIVED)))
    assert other.event_id == joined.event_id


def test_slack_member_joined_channel() -> None:
    event = _one(_adapt_fixture("slack", "member_joined_channel__1"))
    assert (event.kind, event.actor_id, event.actor_type) == ("member_joined", "UF62SGQP6", "human")
    assert (event.space_id, event.community_id) == ("TC7SRSB25", "slack:TC7SRSB25:CF662G3JN")
    assert event.occurred_at == datetime(2019, 1, 12, 4, 50, 40, 3000, tzinfo=UTC)


def test_slack_member_left_channel() -> None:
    body = _edited("slack", "member_joined_channel__1", lambda d: d["event"].update(type="member_left_channel"))
    event = _one(_adapt_fixture("slack", "member_joined_channel__1", body))
    assert event.kind == "member_left"


def test_slack_plain_message_with_old_envelope() -> None:
    event = _one(_adapt_fixture("slack", "message__4"))
    assert (event.space_id, event.kind, event.actor_id) == ("TXXXXXXXX", "thread_started", "UC7LU9ZGS")


def test_slack_reaction_in_a_dm_is_ignored_and_in_a_channel_counts() -> None:
    adapted = _adapt_fixture("slack", "reaction_added__1")
    assert (adapted.events, adapted.ignored) == ((), "direct message")
    body = _edited("slack", "reaction_added__1", lambda d: d["event"]["item"].update(channel="C2AQCJCQ2"))
    event = _one(_adapt_fixture("slack", "reaction_added__1", body))
    assert (event.kind, event.actor_id, event.community_id) == ("reaction", "U27FFLNF4", "slack:T0JFD6M53:C2AQCJCQ2")
    assert (event.parent_id, event.parent_actor_id) == ("1477958101.000004", "U299ATJ2X")
    assert event.occurred_at == datetime(2016, 10, 31, 23, 57, 20, 864000, tzinfo=UTC)


@pytest.mark.parametrize("channel_type", ["im", "mpim"])
def test_slack_direct_messages_are_ignored(channel_type: str) -> None:
    body = _edited("slack", "message__1", lambda d: d["event"].update(channel_type=channel_type))
    assert _adapt_fixture("slack", "message__1", body).ignored == "direct message"


def test_slack_bot_message_subtype_without_user() -> None:
    def bot(d: dict[str, Any]) -> None:
        del d["event"]["user"]
        d["event"].update(subtype="bot_message", bot_id="B123")

    event = _one(_adapt_fixture("slack", "message__4", _edited("slack", "message__4", bot)))
    assert (event.actor_id, event.actor_type) == ("B123", "bot")


def test_slack_edits_and_unknown_subtypes_are_ignored() -> None:
    edit = _edited("slack", "message__4", lambda d: d["event"].update(subtype="message_changed"))
    assert _adapt_fixture("slack", "message__4", edit).ignored == "edit"
    topic = _edited("slack", "message__4", lambda d: d["event"].update(subtype="channel_topic"))
    assert _adapt_fixture("slack", "message__4", topic).ignored == "unsupported message subtype: channel_topic"


def test_slack_url_verification_answers_the_challenge() -> None:
    adapted = _adapt_fixture("slack", "url_verification__1")
    assert adapted.events == ()
    assert adapted.challenge == "valid_challenge_token"


# ------------------------------------------------- every fixture, malformed


@pytest.mark.parametrize(("platform", "name"), fixture_names())
def test_every_fixture_gives_events_or_a_reason(platform: str, name: str) -> None:
    adapted = _adapt_fixture(platform, name)
    assert bool(adapted.events) != bool(adapted.ignored)
    for event in adapted.events:
        assert event.platform == platform
        assert event.received_at == RECEIVED
        assert event.occurred_at < RECEIVED  # event time from the payload, not arrival


@pytest.mark.parametrize(
    ("platform", "name", "change", "field"),
    [
        ("github", "issues__1", lambda d: d["issue"].update(created_at=5), "issue.created_at"),
        ("github", "issues__1", lambda d: d["issue"].update(created_at="yesterday"), "issue.created_at"),
        ("github", "issues__1", lambda d: d["issue"].update(created_at="2019-05-15T15:20:18"), "issue.created_at"),
        ("github", "issues__1", lambda d: d.pop("repository"), "repository"),
        ("github", "issues__1", lambda d: d["issue"]["user"].update(id=True), "issue.user.id"),
        ("github", "discussion__1", lambda d: d.update(discussion=[]), "discussion"),
        ("github", "issues__1", lambda d: d.pop("action"), "action"),
        ("discourse", "post_created__2", lambda d: d["post"].pop("topic_id"), "post.topic_id"),
        ("discourse", "post_created__2", lambda d: d["post"].update(post_number="2"), "post.post_number"),
        ("discourse", "post_created__2", lambda d: d["post"].update(staff="yes"), "post.staff"),
        ("discourse", "user_created__1", lambda d: d["user"].update(id=None), "user.id"),
        ("slack", "message__1", lambda d: d.pop("team_id"), "team_id"),
        ("slack", "message__1", lambda d: d["event"].update(ts=1.5), "event.ts"),
        ("slack", "message__1", lambda d: d["event"].update(ts="99999999999999999"), "event.ts"),
        ("slack", "message__1", lambda d: d["event"].pop("user"), "event.user"),
        ("slack", "reaction_added__1", lambda d: d["event"].update(item="x"), "event.item"),
    ],
)
def test_malformed_fields_name_the_field(platform: str, name: str, change: Any, field: str) -> None:
    with pytest.raises(PayloadError) as info:
        _adapt_fixture(platform, name, _edited(platform, name, change))
    assert info.value.field == field


@pytest.mark.parametrize("platform", ["github", "discourse", "slack"])
@pytest.mark.parametrize("body", [b"", b"not json", b"[1, 2]", b"null", b"\xff\xfe", b"[" * 100_000])
def test_bodies_that_are_not_objects(platform: str, body: bytes) -> None:
    name = {"github": "issues__1", "discourse": "post_created__1", "slack": "message__1"}[platform]
    with pytest.raises(PayloadError) as info:
        _adapt_fixture(platform, name, body)
    assert info.value.field == "body"


def test_unknown_platform_is_a_payload_error() -> None:
    with pytest.raises(PayloadError):
        adapt(Delivery("myspace", {}, b"{}", RECEIVED))


# ------------------------------------------------------------- properties

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


def _only_adapted_or_payload_error(delivery: Delivery) -> None:
    try:
        adapted = adapt(delivery)
    except PayloadError as exc:
        assert isinstance(exc.field, str) and isinstance(exc.reason, str)
        return
    assert isinstance(adapted, Adapted)
    for event in adapted.events:
        assert isinstance(event, CanonicalEvent)
        CanonicalEvent.from_json_bytes(event.to_json_bytes())  # survives the wire


FIXTURE_LIST = fixture_names()


# deadline=None: these check what the adapters raise, not how fast (load once made an example take 476 ms)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(FIXTURE_LIST), st.binary(max_size=300))
def test_arbitrary_bytes_only_raise_payload_error(fixture: tuple[str, str], body: bytes) -> None:
    _only_adapted_or_payload_error(fixture_delivery(*fixture, body=body))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(FIXTURE_LIST), json_values)
def test_arbitrary_json_only_raises_payload_error(fixture: tuple[str, str], value: object) -> None:
    _only_adapted_or_payload_error(fixture_delivery(*fixture, body=json.dumps(value).encode()))


def _paths(value: object, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            found += _paths(child, (*prefix, i))
    return found


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(FIXTURE_LIST), st.data())
def test_mutated_fixtures_only_raise_payload_error(fixture: tuple[str, str], data: st.DataObject) -> None:
    doc = json.loads(fixture_body(*fixture))
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        if data.draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(json_values)
    _only_adapted_or_payload_error(fixture_delivery(*fixture, body=json.dumps(doc).encode()))


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(FIXTURE_LIST),
    st.dictionaries(
        st.sampled_from(
            ["x-github-event", "x-discourse-event", "x-discourse-instance", "content-type", "x-github-delivery"]
        ),
        st.text(max_size=40),
    ),
)
def test_arbitrary_headers_only_raise_payload_error(fixture: tuple[str, str], headers: dict[str, str]) -> None:
    delivery = fixture_delivery(*fixture)
    _only_adapted_or_payload_error(
        Delivery(delivery.platform, {**delivery.headers, **headers}, delivery.body, RECEIVED)
    )


@given(st.sampled_from(FIXTURE_LIST), st.datetimes(timezones=st.just(UTC)))
def test_event_time_never_depends_on_arrival(fixture: tuple[str, str], received: datetime) -> None:
    base = _adapt_fixture(*fixture)
    delivery = fixture_delivery(*fixture)
    later = adapt(Delivery(delivery.platform, delivery.headers, delivery.body, received))
    assert [(e.event_id, e.occurred_at) for e in later.events] == [(e.event_id, e.occurred_at) for e in base.events]


def test_form_content_type_with_a_json_body_is_read_as_json() -> None:
    delivery = fixture_delivery("discourse", "post_created__1")
    form = Delivery(
        "discourse", {**delivery.headers, "content-type": "application/x-www-form-urlencoded"}, delivery.body, RECEIVED
    )
    assert adapt(form) == _adapt_fixture("discourse", "post_created__1")
    with pytest.raises(PayloadError) as info:
        adapt(Delivery("discourse", form.headers, b"a=1&b=2", RECEIVED))
    assert info.value.field == "payload"
