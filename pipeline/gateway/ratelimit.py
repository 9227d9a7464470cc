"""Per-sender rate limit of the gateway: one token bucket per sender key.

Pure: no clock reads, no I/O. The caller passes ``now`` (monotonic seconds).

* ``sender_key(platform, headers, sender)`` names who is sending, from data that
  does not need the body: the generic API's sender (the owner of the bearer
  token), the Discourse instance (``X-Discourse-Instance``), the GitHub hook
  (``X-GitHub-Hook-ID``, else the hook's target id), and for Slack the app
  itself (Slack puts the team only in the body; one signing secret = one app).
* ``RateLimiter.check(key, now)`` takes one token from the key's bucket: a bucket
  holds at most ``burst`` tokens and refills at ``rate_per_s``. It answers
  allowed, or refused with the seconds until a token is back (Retry-After).
* Memory is bounded: at most ``max_senders`` buckets, the least recently used is
  forgotten first (a forgotten sender starts again with a full bucket, which can
  only be more generous, never lose a delivery that was allowed before). Keys
  are cut to ``MAX_KEY_CHARS`` so a header cannot make one entry large.

``rate_per_s <= 0`` disables the limit (every check is allowed, nothing is kept).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

MAX_KEY_CHARS = 200
DEFAULT_MAX_SENDERS = 10_000


@dataclass(frozen=True)
class Limit:
    rate_per_s: float  # tokens added per second; <= 0 disables the limit
    burst: float  # bucket size: requests a quiet sender may send at once

    def __post_init__(self) -> None:
        if self.rate_per_s > 0 and self.burst < 1:
            raise ValueError("burst must be at least 1 when the limit is on")

    @property
    def enabled(self) -> bool:
        return self.rate_per_s > 0


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: float = 0.0  # > 0 only when refused

    def retry_after_header(self) -> str:
        """Retry-After is whole seconds; never 0, or a client would retry at once."""
        return str(max(1, math.ceil(self.retry_after_s)))


ALLOWED = Decision(True)


class RateLimiter:
    """Token buckets per sender key, at most ``max_senders`` of them (LRU)."""

    def __init__(self, limit: Limit, max_senders: int = DEFAULT_MAX_SENDERS) -> None:
        if max_senders < 1:
            raise ValueError("max_senders must be at least 1")
        self.limit = limit
        self.max_senders = max_senders
        # key -> (tokens, time of the last refill)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, key: str, now: float) -> Decision:
        limit = self.limit
        if not limit.enabled:
            return ALLOWED
        key = key[:MAX_KEY_CHARS]
        entry = self._buckets.pop(key, None)
        if entry is None:
            tokens = limit.burst
        else:
            tokens, last = entry
            # a clock that went back gives nothing and takes nothing
            tokens = min(limit.burst, tokens + max(0.0, now - last) * limit.rate_per_s)
        if tokens >= 1.0:
            decision = ALLOWED
            tokens -= 1.0
        else:
            decision = Decision(False, (1.0 - tokens) / limit.rate_per_s)
        self._buckets[key] = (tokens, now)  # most recently used last
        while len(self._buckets) > self.max_senders:
            self._buckets.popitem(last=False)
        return decision


def _first(headers: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = headers.get(name)
        if value and value.strip():
            return value.strip()
    return None


def sender_key(platform: str, headers: Mapping[str, str], sender: str | None = None) -> str:
    """The rate-limit key of a request (``headers`` with lower-case names)."""
    if sender is not None:
        key = f"{platform}:{sender}"
    elif platform == "discourse":
        key = f"discourse:{_first(headers, 'x-discourse-instance') or '-'}"
    elif platform == "github":
        hook = _first(headers, "x-github-hook-id", "x-github-hook-installation-target-id")
        key = f"github:{hook or '-'}"
    else:
        key = platform  # slack: one app, one signing secret
    return key[:MAX_KEY_CHARS]
