"""Replay's pure part: reading recordings and signing them again."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline import config
from pipeline.gateway import adapters, signatures
from pipeline.gateway.producer import is_secret_header, raw_headers
from pipeline.replay.recorded import (
    Recorded,
    RecordingError,
    event_chunks,
    from_raw_record,
    from_request_line,
    read_ndjson,
    read_path,
    route,
    signed_headers,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "webhooks"
SETTINGS = config.load(
    {
        "PULSE_GITHUB_WEBHOOK_SECRET": "gh-secret-0123456789",
        "PULSE_DISCOURSE_WEBHOOK_SECRET": "dc-default-0123456789",
        "PULSE_DISCOURSE_WEBHOOK_SECRETS": "http://forum.a=dc-forum-a-0123456789",
        "PULSE_SLACK_SIGNING_SECRET": "sl-secret-0123456789",
        "PULSE_INGEST_TOKENS": "first=" + "f" * 32 + ",second=" + "s" * 32,
    }
)
NOW = datetime.now(UTC)
ALL_FIXTURES = [r for p in ("github", "discourse", "slack") for r in read_path(FIXTURES / p)]


def verify(recorded: Recorded, headers: dict[str, str], now: float) -> None:
    if recorded.platform == "github":
        signatures.verify_github(SETTINGS.github_webhook_secret, headers, recorded.body)
    elif recorded.platform == "discourse":
        secret = SETTINGS.discourse_secret_for(headers["x-discourse-instance"])
        signatures.verify_discourse(secret, headers, recorded.body)
    else:
        signatures.verify_slack(SETTINGS.slack_signing_secret, headers, recorded.body, now)


def test_every_fixture_file_is_read_with_the_headers_its_adapter_needs() -> None:
    files = sorted(FIXTURES.glob("*/*.json"))
    assert len(ALL_FIXTURES) == len(files)
    for recorded in ALL_FIXTURES:
        # the body is compact JSON of the same document
        source = FIXTURES / (recorded.source + ".json")
        assert json.loads(recorded.body) == json.loads(source.read_bytes())
        assert b"\n" not in recorded.body
        # the adapter reads it without a PayloadError: the headers are what the platform sends
        adapters.adapt(adapters.Delivery(recorded.platform, dict(recorded.headers), recorded.body, NOW))
    github = next(r for r in ALL_FIXTURES if r.source == "github/discussion_comment__1")
    assert github.headers["x-github-event"] == "discussion_comment"
    discourse = next(r for r in ALL_FIXTURES if r.source == "discourse/post_created__1")
    assert discourse.headers["x-discourse-event"] == "post_created"
    assert discourse.headers["x-discourse-event-type"] == "post"


@given(st.sampled_from(ALL_FIXTURES), st.floats(min_value=1e9, max_value=4e9))
def test_signed_headers_verify_with_the_configured_secret(recorded: Recorded, now: float) -> None:
    headers = signed_headers(recorded, SETTINGS, now)
    verify(recorded, headers, now)


def test_discourse_uses_the_instance_secret() -> None:
    recorded = Recorded("discourse", b"{}", {"x-discourse-instance": "http://forum.a"})
    headers = signed_headers(recorded, SETTINGS, time.time())
    signatures.verify_discourse("dc-forum-a-0123456789", headers, b"{}")
    with pytest.raises(signatures.SignatureError):
        signatures.verify_discourse("dc-default-0123456789", headers, b"{}")


@given(st.sampled_from(ALL_FIXTURES), st.text(alphabet="0123456789abcdef", min_size=8, max_size=64))
def test_a_recorded_signature_is_replaced(recorded: Recorded, stale: str) -> None:
    old = {"x-hub-signature-256": "sha256=" + stale, "x-slack-signature": "v0=" + stale,
           "x-discourse-event-signature": "sha256=" + stale, "authorization": "Bearer old"}
    with_old = Recorded(recorded.platform, recorded.body, {**recorded.headers, **old})
    headers = signed_headers(with_old, SETTINGS, time.time())
    assert stale not in "".join(headers.values())
    assert "authorization" not in headers
    verify(with_old, headers, time.time())


def test_generic_chunks_get_a_bearer_token_of_the_chosen_sender() -> None:
    chunk = Recorded("generic", b"{}\n", {"content-type": "application/x-ndjson"})
    assert route(chunk) == "/v1/events"
    assert signed_headers(chunk, SETTINGS, 0)["authorization"] == "Bearer " + "f" * 32
    assert signed_headers(chunk, SETTINGS, 0, sender="second")["authorization"] == "Bearer " + "s" * 32
    with pytest.raises(RecordingError):
        signed_headers(chunk, SETTINGS, 0, sender="nobody")


def test_missing_secrets_are_named() -> None:
    bare = config.load({})
    for platform in ("github", "discourse", "slack", "generic"):
        with pytest.raises(RecordingError):
            signed_headers(Recorded(platform, b"{}"), bare, time.time())


@given(st.integers(min_value=0, max_value=40), st.integers(min_value=1, max_value=12))
def test_event_chunks_keep_every_line_in_order(n: int, size: int) -> None:
    lines = [(i + 1, json.dumps({"event_id": f"e{i}", "kind": "reply"})) for i in range(n)]
    chunks = list(event_chunks(lines, size, "f"))
    assert all(0 < c.events <= size for c in chunks)
    assert len(chunks) == -(-n // size)
    sent = [line for c in chunks for line in c.body.decode().splitlines()]
    assert sent == [line for _, line in lines]
    assert all(c.platform == "generic" and c.headers["content-type"] == "application/x-ndjson" for c in chunks)


def test_ndjson_of_requests_and_of_events_are_told_apart() -> None:
    requests = "\n".join([
        json.dumps({"platform": "github", "headers": {"X-GitHub-Event": "ping"}, "body": "{}"}),
        json.dumps({"platform": "slack", "headers": {}, "body_b64": base64.b64encode(b"\xff").decode()}),
        json.dumps({"platform": "generic", "path": "/v1/events", "headers": {}, "body": "[]"}),
    ])
    read = list(read_ndjson(requests, "r.ndjson"))
    assert [r.platform for r in read] == ["github", "slack", "generic"]
    assert read[0].headers == {"x-github-event": "ping"}
    assert read[1].body == b"\xff"
    events = "\n".join(json.dumps({"event_id": f"e{i}", "kind": "reply"}) for i in range(5))
    chunks = list(read_ndjson(events, "e.ndjson", chunk=2))
    assert [c.events for c in chunks] == [2, 2, 1]


@pytest.mark.parametrize(
    "line",
    ["not json", "[]", '{"platform": "myspace", "body": ""}', '{"platform": "github"}',
     '{"platform": "github", "body_b64": "***"}', '{"platform": "github", "headers": {"a": 1}, "body": ""}'],
)
def test_bad_request_lines_are_refused_with_where(line: str) -> None:
    with pytest.raises(RecordingError, match=r"r\.ndjson:7"):
        from_request_line(line, "r.ndjson:7")


def test_a_raw_record_round_trips_without_its_signature() -> None:
    headers = {"content-type": "application/json", "x-github-event": "ping", "x-hub-signature-256": "sha256=00"}
    kafka_headers = raw_headers(headers, "github", datetime.now(UTC))
    recorded = from_raw_record(kafka_headers, b"{}", "raw:0:1")
    assert recorded is not None
    assert recorded.platform == "github"
    assert recorded.headers == {"content-type": "application/json", "x-github-event": "ping"}
    assert not any(is_secret_header(k) for k in recorded.headers)
    assert from_raw_record(raw_headers({}, "generic", datetime.now(UTC), "s"), b"[]", "raw") is None


def test_read_path_refuses_what_it_cannot_place(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(RecordingError, match="platform"):
        list(read_path(tmp_path / "x.json"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecordingError, match=r"no \.json"):
        list(read_path(tmp_path / "empty"))
