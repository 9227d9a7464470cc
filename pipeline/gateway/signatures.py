"""Webhook signature checks and the matching signers (pure, no I/O).

Every check runs over the raw request body bytes, before any parsing, and
compares in constant time (``hmac.compare_digest``). A platform without a
configured secret is refused: an unsigned delivery is never accepted.

Each failure raises ``SignatureError`` whose ``reason`` is safe to return to
the caller and to log: it names the header or the rule that failed, never a
secret nor the expected signature.

Schemes (see tests/fixtures/webhooks/*/HEADERS.md):

- GitHub ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>``
- Discourse ``X-Discourse-Event-Signature: sha256=<hex HMAC-SHA256(secret, body)>``
  (the caller picks the secret of the instance named by ``X-Discourse-Instance``)
- Slack ``X-Slack-Signature: v0=<hex HMAC-SHA256(secret, "v0:" + ts + ":" + body)>``
  with ``X-Slack-Request-Timestamp: ts`` within 5 minutes of ``now`` either way.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping

from pipeline.config import Secret

GITHUB_HEADER = "X-Hub-Signature-256"
DISCOURSE_HEADER = "X-Discourse-Event-Signature"
SLACK_SIGNATURE_HEADER = "X-Slack-Signature"
SLACK_TIMESTAMP_HEADER = "X-Slack-Request-Timestamp"
SLACK_WINDOW_S = 300  # Slack's recommended replay window, in both directions

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


class SignatureError(Exception):
    """The delivery is not proven to come from the platform (the gateway answers 401)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _key(secret: Secret | str | None, platform: str) -> bytes:
    value = secret.reveal() if isinstance(secret, Secret) else secret
    if not value:
        raise SignatureError(f"no secret configured for {platform}")
    return value.encode("utf-8")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive lookup: the gateway lower-cases keys, callers may not."""
    value = headers.get(name.lower())
    if value is None:
        value = headers.get(name)
    if value is None:
        lowered = name.lower()
        for key, candidate in headers.items():
            if key.lower() == lowered:
                return candidate
    return value


def _hmac_hex(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _check(header_value: str | None, header: str, prefix: str, key: bytes, message: bytes) -> None:
    if header_value is None:
        raise SignatureError(f"missing {header} header")
    value = header_value.strip()
    digest = value[len(prefix) :] if value.startswith(prefix) else ""
    if not _SHA256_HEX.fullmatch(digest):
        raise SignatureError(f"malformed {header} header (expected {prefix}<64 hex digits>)")
    expected = _hmac_hex(key, message).encode("ascii")
    if not hmac.compare_digest(expected, digest.lower().encode("ascii")):
        raise SignatureError("signature does not match")


# ------------------------------------------------------------------ GitHub


def verify_github(secret: Secret | str | None, headers: Mapping[str, str], body: bytes) -> None:
    key = _key(secret, "github")
    _check(_header(headers, GITHUB_HEADER), GITHUB_HEADER, "sha256=", key, body)


def sign_github(secret: str, body: bytes) -> dict[str, str]:
    return {GITHUB_HEADER: "sha256=" + _hmac_hex(secret.encode("utf-8"), body)}


# --------------------------------------------------------------- Discourse


def verify_discourse(secret: Secret | str | None, headers: Mapping[str, str], body: bytes) -> None:
    key = _key(secret, "discourse")
    _check(_header(headers, DISCOURSE_HEADER), DISCOURSE_HEADER, "sha256=", key, body)


def sign_discourse(secret: str, body: bytes) -> dict[str, str]:
    return {DISCOURSE_HEADER: "sha256=" + _hmac_hex(secret.encode("utf-8"), body)}


# ------------------------------------------------------------------- Slack


def _slack_base(timestamp: str, body: bytes) -> bytes:
    return b"v0:" + timestamp.encode("ascii") + b":" + body


def verify_slack(secret: Secret | str | None, headers: Mapping[str, str], body: bytes, now: float) -> None:
    """Check the v0 signature and that the request was signed within 5 minutes of ``now``."""
    key = _key(secret, "slack")
    raw_ts = _header(headers, SLACK_TIMESTAMP_HEADER)
    if raw_ts is None:
        raise SignatureError(f"missing {SLACK_TIMESTAMP_HEADER} header")
    ts = raw_ts.strip()
    if not (ts.isascii() and ts.isdigit()) or len(ts) > 12:
        raise SignatureError(f"malformed {SLACK_TIMESTAMP_HEADER} header (expected Unix seconds)")
    if abs(now - int(ts)) > SLACK_WINDOW_S:
        raise SignatureError("timestamp outside the 5-minute window")
    _check(
        _header(headers, SLACK_SIGNATURE_HEADER),
        SLACK_SIGNATURE_HEADER,
        "v0=",
        key,
        _slack_base(ts, body),
    )


def sign_slack(secret: str, body: bytes, timestamp: int | float | str) -> dict[str, str]:
    ts = str(int(float(timestamp)))
    return {
        SLACK_TIMESTAMP_HEADER: ts,
        SLACK_SIGNATURE_HEADER: "v0=" + _hmac_hex(secret.encode("utf-8"), _slack_base(ts, body)),
    }
