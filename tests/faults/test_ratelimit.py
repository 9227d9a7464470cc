"""The per-sender token bucket (pure): exact counts, refill, retry-after, bounded memory."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.gateway.ratelimit import MAX_KEY_CHARS, Decision, Limit, RateLimiter, sender_key


def test_a_quiet_sender_gets_its_burst_then_is_refused_with_retry_after() -> None:
    limiter = RateLimiter(Limit(rate_per_s=2.0, burst=5))
    decisions = [limiter.check("a", now=100.0) for _ in range(7)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 2
    assert decisions[5].retry_after_s == pytest.approx(0.5)  # one token at 2 per second
    assert decisions[5].retry_after_header() == "1"
    # half a second later exactly one more token is back
    assert limiter.check("a", now=100.5).allowed
    assert not limiter.check("a", now=100.5).allowed


def test_senders_do_not_share_a_bucket() -> None:
    limiter = RateLimiter(Limit(rate_per_s=1.0, burst=1))
    assert limiter.check("a", 0.0).allowed
    assert not limiter.check("a", 0.0).allowed
    assert limiter.check("b", 0.0).allowed


def test_refill_never_exceeds_the_burst() -> None:
    limiter = RateLimiter(Limit(rate_per_s=10.0, burst=3))
    for _ in range(3):
        limiter.check("a", 0.0)
    allowed = sum(limiter.check("a", 1_000.0).allowed for _ in range(10))
    assert allowed == 3


def test_a_clock_going_back_neither_gives_nor_takes() -> None:
    limiter = RateLimiter(Limit(rate_per_s=1.0, burst=1))
    assert limiter.check("a", 10.0).allowed
    assert not limiter.check("a", 5.0).allowed
    assert limiter.check("a", 6.0).allowed  # one second after the step back


def test_disabled_limit_allows_everything_and_keeps_nothing() -> None:
    limiter = RateLimiter(Limit(rate_per_s=0, burst=0))
    assert all(limiter.check(f"k{i}", 0.0).allowed for i in range(1000))
    assert len(limiter) == 0


def test_memory_is_bounded_and_the_least_recently_used_goes_first() -> None:
    limiter = RateLimiter(Limit(rate_per_s=1.0, burst=1), max_senders=3)
    for key in ("a", "b", "c"):
        assert limiter.check(key, 0.0).allowed
    assert not limiter.check("a", 0.0).allowed  # a is now the most recent
    assert limiter.check("d", 0.0).allowed  # evicts b, the least recently used
    assert len(limiter) == 3
    assert limiter.check("b", 0.0).allowed  # b forgot it was empty: a fresh bucket
    assert not limiter.check("a", 0.0).allowed  # a was kept, still empty


def test_long_keys_are_cut() -> None:
    limiter = RateLimiter(Limit(rate_per_s=1.0, burst=1))
    assert limiter.check("x" * 10_000, 0.0).allowed
    assert not limiter.check("x" * MAX_KEY_CHARS + "different tail", 0.0).allowed


def test_invalid_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        Limit(rate_per_s=1.0, burst=0.5)
    with pytest.raises(ValueError):
        RateLimiter(Limit(1.0, 1.0), max_senders=0)


def test_retry_after_header_is_whole_seconds_at_least_one() -> None:
    assert Decision(False, 0.01).retry_after_header() == "1"
    assert Decision(False, 2.2).retry_after_header() == "3"


def test_sender_keys() -> None:
    assert sender_key("generic", {}, sender="tester") == "generic:tester"
    assert sender_key("discourse", {"x-discourse-instance": "https://f.example"}) == "discourse:https://f.example"
    assert sender_key("github", {"x-github-hook-id": "42"}) == "github:42"
    assert sender_key("github", {"x-github-hook-installation-target-id": "7"}) == "github:7"
    assert sender_key("github", {}) == "github:-"
    assert sender_key("slack", {"x-slack-signature": "v0=..."}) == "slack"
    assert len(sender_key("discourse", {"x-discourse-instance": "h" * 5000})) == MAX_KEY_CHARS


# ------------------------------------------------------------------ properties

times = st.lists(st.floats(min_value=0, max_value=0.5, allow_nan=False), min_size=1, max_size=200)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(min_value=0.1, max_value=1000),
    burst=st.integers(min_value=1, max_value=50),
    gaps=times,
)
def test_never_more_than_burst_plus_refill(rate: float, burst: int, gaps: list[float]) -> None:
    """Over any run, allowed <= burst + rate * elapsed (the token bucket's guarantee)."""
    limiter = RateLimiter(Limit(rate, burst))
    now = 0.0
    allowed = 0
    for gap in gaps:
        now += gap
        allowed += limiter.check("k", now).allowed
    assert allowed <= burst + rate * now + 1e-6


@settings(max_examples=200, deadline=None)
@given(rate=st.floats(min_value=0.1, max_value=1000), burst=st.integers(min_value=1, max_value=50), gaps=times)
def test_retry_after_is_honest(rate: float, burst: int, gaps: list[float]) -> None:
    """A refused sender that waits the retry-after it was given is allowed again."""
    limiter = RateLimiter(Limit(rate, burst))
    now = 0.0
    for gap in gaps:
        now += gap
        decision = limiter.check("k", now)
        if not decision.allowed:
            assert decision.retry_after_s > 0
            assert decision.retry_after_s <= 1 / rate + 1e-9
            # other senders meanwhile change nothing for this one
            limiter.check("other", now)
            assert limiter.check("k", now + decision.retry_after_s * (1 + 1e-9) + 1e-9).allowed
            return


@settings(max_examples=100, deadline=None)
@given(keys=st.lists(st.text(max_size=30), max_size=300), cap=st.integers(min_value=1, max_value=20))
def test_bucket_count_never_exceeds_the_cap(keys: list[str], cap: int) -> None:
    limiter = RateLimiter(Limit(5.0, 2), max_senders=cap)
    for i, key in enumerate(keys):
        limiter.check(key, float(i))
        assert len(limiter) <= cap
    assert len(limiter) == min(cap, len(set(k[:MAX_KEY_CHARS] for k in keys)))


@settings(max_examples=100, deadline=None)
@given(rate=st.floats(min_value=0.5, max_value=100), burst=st.integers(min_value=1, max_value=20),
       seconds=st.integers(min_value=1, max_value=30))
def test_a_steady_sender_at_the_rate_is_never_refused(rate: float, burst: int, seconds: int) -> None:
    limiter = RateLimiter(Limit(rate, burst))
    pace = 0.999 * rate  # just under the rate: float rounding must not decide the answer
    n = math.floor(pace * seconds)
    assert all(limiter.check("k", i / pace).allowed for i in range(n))
