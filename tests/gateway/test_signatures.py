"""Signature checks: the published test vectors, tampering, replay window, properties."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.config import Secret
from pipeline.gateway.signatures import (
    SignatureError,
    sign_discourse,
    sign_github,
    sign_slack,
    verify_discourse,
    verify_github,
    verify_slack,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "webhooks"


def _lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _vector(platform: str, label: str) -> str:
    """A backquoted value from the HEADERS.md test vector section (read, not retyped)."""
    text = (FIXTURES / platform / "HEADERS.md").read_text(encoding="utf-8")
    section = text.split("## Test vector", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        if label in line:
            found = re.findall(r"`([^`]*)`", line)
            if found:
                return found[-1]
    raise AssertionError(f"{label!r} not in the {platform} test vector")


# ------------------------------------------------------------- test vectors


def test_github_vector_from_headers_md() -> None:
    secret = _vector("github", "secret:")
    body = _vector("github", "body:").encode()
    header = _vector("github", "X-Hub-Signature-256")
    assert header.startswith("X-Hub-Signature-256: ")
    value = header.split(": ", 1)[1]
    verify_github(Secret(secret), {"x-hub-signature-256": value}, body)
    assert sign_github(secret, body) == {"X-Hub-Signature-256": value}


def test_discourse_vector_from_headers_md() -> None:
    secret = _vector("discourse", "secret:")
    body = _vector("discourse", "body:").encode()
    value = _vector("discourse", "X-Discourse-Event-Signature").split(": ", 1)[1]
    verify_discourse(Secret(secret), {"x-discourse-event-signature": value}, body)
    assert sign_discourse(secret, body)["X-Discourse-Event-Signature"] == value


def test_slack_vector_with_a_frozen_clock() -> None:
    secret = _vector("slack", "signing secret:")
    ts = _vector("slack", "X-Slack-Request-Timestamp").split(": ", 1)[1]
    body = _vector("slack", "body (").encode()
    value = _vector("slack", "X-Slack-Signature").split(": ", 1)[1]
    headers = {"x-slack-request-timestamp": ts, "x-slack-signature": value}
    verify_slack(Secret(secret), headers, body, now=float(ts) + 12)
    assert sign_slack(secret, body, ts)["X-Slack-Signature"] == value
    # the real clock is years later: the same request is a replay
    with pytest.raises(SignatureError, match="5-minute window"):
        verify_slack(Secret(secret), headers, body, now=float(ts) + 10 * 365 * 86400)


# ----------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("verify", "platform"),
    [(verify_github, "github"), (verify_discourse, "discourse")],
)
def test_no_secret_configured_refuses_even_unsigned(verify: object, platform: str) -> None:
    for secret in (None, Secret(""), ""):
        with pytest.raises(SignatureError) as info:
            verify(secret, {}, b"{}")  # type: ignore[operator]
        assert info.value.reason == f"no secret configured for {platform}"


def test_slack_without_secret_refuses() -> None:
    with pytest.raises(SignatureError, match="no secret configured for slack"):
        verify_slack(None, {}, b"{}", now=0.0)


def test_missing_header_names_the_header() -> None:
    with pytest.raises(SignatureError) as info:
        verify_github(Secret("s3cret-value"), {}, b"{}")
    assert info.value.reason == "missing X-Hub-Signature-256 header"
    with pytest.raises(SignatureError) as info:
        verify_discourse(Secret("s3cret-value"), {}, b"{}")
    assert info.value.reason == "missing X-Discourse-Event-Signature header"
    with pytest.raises(SignatureError) as info:
        verify_slack(Secret("s3cret-value"), {"x-slack-signature": "v0=00"}, b"{}", now=0)
    assert info.value.reason == "missing X-Slack-Request-Timestamp header"


@pytest.mark.parametrize(
    "value", ["", "sha256=", "sha1=" + "0" * 40, "sha256=" + "g" * 64, "sha256=" + "0" * 63, "é" * 71]
)
def test_malformed_header_is_refused_without_crashing(value: str) -> None:
    with pytest.raises(SignatureError, match="malformed X-Hub-Signature-256"):
        verify_github(Secret("s3cret-value"), {"x-hub-signature-256": value}, b"{}")


def test_signature_with_another_secret_does_not_match() -> None:
    headers = _lower(sign_github("the-wrong-secret", b"{}"))
    with pytest.raises(SignatureError) as info:
        verify_github(Secret("the-right-secret"), headers, b"{}")
    assert info.value.reason == "signature does not match"


def test_uppercase_hex_and_mixed_case_header_names_are_accepted() -> None:
    value = sign_github("k", b"body")["X-Hub-Signature-256"]
    verify_github(Secret("k"), {"X-Hub-Signature-256": "sha256=" + value[7:].upper()}, b"body")


@pytest.mark.parametrize("skew", [-301, 301, -10_000, 10_000])
def test_slack_window_both_directions(skew: int) -> None:
    headers = _lower(sign_slack("k" * 20, b"{}", 1_700_000_000))
    with pytest.raises(SignatureError) as info:
        verify_slack("k" * 20, headers, b"{}", now=1_700_000_000 - skew)
    assert info.value.reason == "timestamp outside the 5-minute window"


@pytest.mark.parametrize("skew", [-300, 0, 300])
def test_slack_window_edges_accept(skew: int) -> None:
    headers = _lower(sign_slack("k" * 20, b"{}", 1_700_000_000))
    verify_slack("k" * 20, headers, b"{}", now=1_700_000_000 + skew)


@pytest.mark.parametrize("ts", ["", "abc", "1.5", "-3", "١٢٣", "9" * 40])
def test_slack_malformed_timestamp(ts: str) -> None:
    headers = {"x-slack-request-timestamp": ts, "x-slack-signature": "v0=" + "0" * 64}
    with pytest.raises(SignatureError, match="X-Slack-Request-Timestamp"):
        verify_slack("k", headers, b"{}", now=1_700_000_000)


def test_slack_timestamp_is_inside_the_signature() -> None:
    headers = _lower(sign_slack("k", b"{}", 1_700_000_000))
    headers["x-slack-request-timestamp"] = "1700000001"
    with pytest.raises(SignatureError, match="does not match"):
        verify_slack("k", headers, b"{}", now=1_700_000_000)


# ------------------------------------------------------------ safe reasons


def test_reasons_never_contain_the_secret_or_the_expected_signature() -> None:
    secret = "super-secret-value-1234567890"
    body = b'{"a": 1}'
    good = sign_github(secret, body)["X-Hub-Signature-256"]
    attempts = [
        {},
        {"x-hub-signature-256": "sha256=" + "0" * 64},
        {"x-hub-signature-256": "bogus"},
    ]
    for headers in attempts:
        with pytest.raises(SignatureError) as info:
            verify_github(Secret(secret), headers, body)
        text = str(info.value) + repr(info.value) + info.value.reason
        assert secret not in text
        assert good[7:] not in text


# --------------------------------------------------------------- properties

secrets = st.text(min_size=1, max_size=64)
bodies = st.binary(max_size=2048)


@given(secrets, bodies)
def test_github_roundtrip(secret: str, body: bytes) -> None:
    verify_github(Secret(secret), _lower(sign_github(secret, body)), body)


@given(secrets, bodies)
def test_discourse_roundtrip(secret: str, body: bytes) -> None:
    verify_discourse(Secret(secret), _lower(sign_discourse(secret, body)), body)


@given(secrets, bodies, st.integers(1_000_000_000, 4_000_000_000), st.integers(-300, 300))
def test_slack_roundtrip(secret: str, body: bytes, ts: int, skew: int) -> None:
    verify_slack(Secret(secret), _lower(sign_slack(secret, body, ts)), body, now=ts + skew)


def _flip(body: bytes, index: int, value: int) -> bytes:
    i = index % len(body)
    new = value if value != body[i] else (value + 1) % 256
    return body[:i] + bytes([new]) + body[i + 1 :]


@given(secrets, st.binary(min_size=1, max_size=512), st.integers(0, 10_000), st.integers(0, 255))
def test_any_single_byte_change_fails(secret: str, body: bytes, index: int, value: int) -> None:
    tampered = _flip(body, index, value)
    assert tampered != body
    for sign, verify in ((sign_github, verify_github), (sign_discourse, verify_discourse)):
        headers = _lower(sign(secret, body))
        with pytest.raises(SignatureError, match="does not match"):
            verify(Secret(secret), headers, tampered)
    headers = _lower(sign_slack(secret, body, 1_700_000_000))
    with pytest.raises(SignatureError, match="does not match"):
        verify_slack(Secret(secret), headers, tampered, now=1_700_000_000)


@given(secrets, bodies, st.integers(0, 63), st.sampled_from("0123456789abcdef"))
def test_any_change_to_the_signature_fails(secret: str, body: bytes, pos: int, digit: str) -> None:
    value = sign_github(secret, body)["X-Hub-Signature-256"]
    hexpart = value[7:]
    if hexpart[pos] == digit:
        digit = "0" if digit != "0" else "1"
    changed = "sha256=" + hexpart[:pos] + digit + hexpart[pos + 1 :]
    with pytest.raises(SignatureError, match="does not match"):
        verify_github(Secret(secret), {"x-hub-signature-256": changed}, body)


@given(st.dictionaries(st.text(max_size=30), st.text(max_size=80), max_size=5), bodies)
def test_arbitrary_headers_only_raise_signature_error(headers: dict[str, str], body: bytes) -> None:
    for verify in (verify_github, verify_discourse):
        with pytest.raises(SignatureError):
            verify(Secret("k"), headers, body)
    with pytest.raises(SignatureError):
        verify_slack(Secret("k"), headers, body, now=1_700_000_000)
