"""Pure parts of the gateway service: header scrubbing, tokens, labels, records, OpenAPI."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from pipeline import config, metrics, topics
from pipeline.config import Secret
from pipeline.events import ENGAGEMENT_KINDS, CanonicalEvent
from pipeline.gateway.app import (
    Refusal,
    declared_length,
    ignore_label,
    kind_label,
    media_type,
    sender_for,
)
from pipeline.gateway.openapi import openapi_document
from pipeline.gateway.producer import (
    H_PLATFORM,
    H_RECEIVED_AT,
    H_SENDER,
    SECRET_HEADERS,
    RawDelivery,
    is_secret_header,
    raw_headers,
    records_for,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
header_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=30)
header_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60)


def _case_variants(name: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
        lambda flips: "".join(c.upper() if f else c for c, f in zip(name, flips, strict=True))
    )


secret_names = st.sampled_from([*sorted(SECRET_HEADERS), "x-hub-signature-512"]).flatmap(_case_variants)


@given(st.dictionaries(header_names, header_values, max_size=8), secret_names, header_values)
def test_raw_headers_never_carry_a_signature_or_credential(
    headers: dict[str, str], secret_name: str, secret_value: str
) -> None:
    headers = {**headers, secret_name: secret_value}
    kept = dict(raw_headers(headers, "github", NOW))
    assert not any(is_secret_header(name) for name in kept)
    assert secret_name.lower() not in kept
    # everything else that is not transport or ours survives, byte for byte
    for name, value in headers.items():
        if not is_secret_header(name) and name not in ("host", "content-length", "connection",
                                                        "transfer-encoding", "keep-alive",
                                                        "accept-encoding") and not name.startswith("pulse-"):
            assert kept[name.lower()] == value.encode()


def test_raw_headers_add_platform_time_and_sender_and_cannot_be_forged() -> None:
    kept = raw_headers(
        {"Content-Type": "application/json", "pulse-platform": "slack", "Authorization": "Bearer x" * 3},
        "generic",
        NOW,
        sender="tester",
    )
    as_dict = dict(kept)
    assert as_dict[H_PLATFORM] == b"generic"
    assert as_dict[H_SENDER] == b"tester"
    assert datetime.fromisoformat(as_dict[H_RECEIVED_AT].decode()) == NOW
    assert [v for k, v in kept if k == H_PLATFORM] == [b"generic"]
    assert "authorization" not in as_dict
    assert as_dict["content-type"] == b"application/json"


def test_secret_header_family() -> None:
    for name in ("X-Hub-Signature", "X-Hub-Signature-256", "x-discourse-event-signature",
                 "X-Slack-Signature", "Authorization", "Cookie"):
        assert is_secret_header(name)
    for name in ("X-GitHub-Event", "X-Slack-Request-Timestamp", "X-Discourse-Instance", "Content-Type"):
        assert not is_secret_header(name)


TOKENS = {"alpha": Secret("a" * 32), "beta": Secret("b" * 20 + "c" * 12)}


@given(st.sampled_from(sorted(TOKENS)), st.sampled_from(["Bearer", "bearer", "BEARER"]))
def test_sender_for_finds_the_sender_of_a_known_token(sender: str, scheme: str) -> None:
    assert sender_for(f"{scheme} {TOKENS[sender].reveal()}", TOKENS) == sender


@given(st.text(max_size=80))
def test_sender_for_refuses_anything_but_an_exact_token(presented: str) -> None:
    expected = next((s for s, t in TOKENS.items() if t.reveal() == presented.strip()), None)
    assert sender_for(f"Bearer {presented}", TOKENS) == expected
    assert sender_for(presented, TOKENS) is None or presented.lower().startswith("bearer ")


def test_sender_for_edge_cases() -> None:
    token = TOKENS["alpha"].reveal()
    assert sender_for(None, TOKENS) is None
    assert sender_for("", TOKENS) is None
    assert sender_for(f"Basic {token}", TOKENS) is None
    assert sender_for(f"Bearer {token[:-1]}", TOKENS) is None
    assert sender_for(f"Bearer {token}x", TOKENS) is None
    assert sender_for(f"Bearer {token}", {}) is None
    assert sender_for("Bearer ünïcode", TOKENS) is None


def test_media_type() -> None:
    assert media_type("application/json; charset=utf-8") == "application/json"
    assert media_type(" Application/JSON ") == "application/json"
    assert media_type(None) == ""
    assert media_type("") == ""


@given(st.integers(min_value=0, max_value=10**30))
def test_declared_length_reads_byte_counts(n: int) -> None:
    assert declared_length(str(n)) == n
    assert declared_length(f" {n} ") == n


@given(st.text(min_size=1).filter(lambda t: not (t.strip().isascii() and t.strip().isdigit())))
def test_declared_length_refuses_anything_else(value: str) -> None:
    try:
        declared_length(value)
    except Refusal as refusal:
        assert refusal.status == 400
        assert refusal.field == "header.content-length"
    else:
        raise AssertionError(f"accepted {value!r}")


def test_declared_length_absent() -> None:
    assert declared_length(None) is None


@given(st.text(max_size=70))
def test_kind_label_is_bounded(kind: str) -> None:
    label = kind_label(kind)
    assert label in ENGAGEMENT_KINDS | {"other"}
    assert (label == kind) == (kind in ENGAGEMENT_KINDS)


@given(st.text(max_size=100))
def test_ignore_label_is_always_a_known_reason(reason: str) -> None:
    assert ignore_label(reason) in metrics.IGNORE_REASONS


def test_ignore_label_maps_the_adapters_reasons() -> None:
    assert ignore_label("ping") == "ping"
    assert ignore_label("private message") == "private_message"
    assert ignore_label("edit") == "edit"
    assert ignore_label("unsupported event: issues.labeled") == "unsupported"
    assert ignore_label("something new") == "other"


def _event(n: int, community: str) -> CanonicalEvent:
    return CanonicalEvent(
        event_id=f"e{n}", platform="github", space_id="s", community_id=community,
        kind="reply", actor_id="a", occurred_at=NOW,
    )


@given(st.lists(st.sampled_from(["c1", "c2", "ünï/c3"]), max_size=6), st.sampled_from(["", "t-1."]))
def test_records_for_raw_first_then_events_keyed_by_community(communities: list[str], prefix: str) -> None:
    settings = config.load({"PULSE_TOPIC_PREFIX": prefix})
    raw = RawDelivery(b"d1", b"{}", [("content-type", b"application/json")])
    events = [_event(i, c) for i, c in enumerate(communities)]
    records = records_for(settings, raw, events)
    assert records[0] == (prefix + topics.RAW, b"d1", b"{}", [("content-type", b"application/json")])
    assert len(records) == 1 + len(events)
    for (topic, key, value, headers), event in zip(records[1:], events, strict=True):
        assert topic == prefix + topics.EVENTS
        assert key == event.community_id.encode()
        assert CanonicalEvent.from_json_bytes(value) == event
        assert headers == []


def test_openapi_document_is_3_1_and_documents_every_route_and_error() -> None:
    doc = openapi_document(config.load({}))
    json.dumps(doc)  # serializable
    assert doc["openapi"].startswith("3.1")
    paths = doc["paths"]
    for path in ("/webhooks/github", "/webhooks/discourse", "/webhooks/slack", "/v1/events"):
        responses = paths[path]["post"]["responses"]
        assert {"202", "400", "401", "413", "415", "503"} <= set(responses)
        assert "Retry-After" in responses["503"]["headers"]
    assert "200" in paths["/webhooks/slack"]["post"]["responses"]
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert "get" in paths[path]
    # every $ref points at a defined component
    text = json.dumps(doc)
    for name in doc["components"]["schemas"]:
        assert f"#/components/schemas/{name}" in text or name == "CanonicalEvent"
    for ref in {part.split('"')[0] for part in text.split('"$ref": "')[1:]}:
        assert ref.removeprefix("#/components/schemas/") in doc["components"]["schemas"]
