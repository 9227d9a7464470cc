"""Health rules with hysteresis: from rolling views to a state, flags and responsiveness.

Pure: ``evaluate(inputs, policy, previous)``. Each rule is entered at its
threshold and, once held, left only when its exit condition holds (the margins
are in ``HealthThresholds``), so a community sitting on a threshold keeps its
state instead of flapping. Priority of the primary state: dead > dying >
one_poster > healthy. ``flags`` lists every rule that holds (including
``unanswered_backlog`` and ``when_we_can``).
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.policy import CommunityPolicy
from pipeline.results import Flag, Responsiveness, State

_PRIORITY: tuple[State, ...] = ("dead", "dying", "one_poster")


@dataclass(frozen=True, slots=True)
class HealthInputs:
    """Rolling views as of stream time (built from hourly/daily buckets and the thread book)."""

    silence_s: float | None  # since the last human post; None = never posted
    posts_7d: int
    baseline_posts_per_week: float  # weekly average of the 4 weeks before the last 7 d
    posts_28d: int
    top1_share_28d: float
    threads_started_7d: int
    first_response_p50_7d_s: float | None
    answered_within_sla_7d: float | None  # share of eligible 7 d threads answered within SLA
    backlog_threads: int  # threads with no non-author response after the SLA


@dataclass(frozen=True, slots=True)
class Verdict:
    state: State
    flags: tuple[Flag, ...]
    responsiveness: Responsiveness

    @property
    def held(self) -> frozenset[str]:
        return frozenset(self.flags) | {self.responsiveness}


def _dead(i: HealthInputs, p: CommunityPolicy) -> bool:
    return i.silence_s is not None and i.silence_s >= p.thresholds.dead_after_s


def _dying(i: HealthInputs, p: CommunityPolicy, was: bool) -> bool:
    t = p.thresholds
    base = i.baseline_posts_per_week
    if was:
        return not (base < t.dying_exit_min_baseline or i.posts_7d >= t.dying_exit_ratio * base)
    return base >= t.dying_min_baseline and i.posts_7d < t.dying_ratio * base


def _one_poster(i: HealthInputs, p: CommunityPolicy, was: bool) -> bool:
    t = p.thresholds
    share = p.one_poster_share()
    if was:
        return not (i.posts_28d < t.one_poster_exit_min_posts or i.top1_share_28d < share - t.one_poster_exit_margin)
    return i.posts_28d >= t.one_poster_min_posts and i.top1_share_28d >= share


def _on_demand(i: HealthInputs, p: CommunityPolicy, was: bool) -> bool:
    t = p.thresholds
    p50, share = i.first_response_p50_7d_s, i.answered_within_sla_7d
    if p50 is None or share is None:
        return False
    if was:
        return p50 <= t.on_demand_exit_p50_s and share >= t.on_demand_exit_share
    return p50 <= t.on_demand_p50_s and share >= t.on_demand_share


def evaluate(inputs: HealthInputs, policy: CommunityPolicy, previous: Verdict | None) -> Verdict:
    held = previous.held if previous else frozenset()
    flags: list[Flag] = []
    if _dead(inputs, policy):
        flags.append("dead")
    if _dying(inputs, policy, "dying" in held):
        flags.append("dying")
    if _one_poster(inputs, policy, "one_poster" in held):
        flags.append("one_poster")
    responsiveness: Responsiveness
    if inputs.threads_started_7d == 0:
        responsiveness = "no_demand"
    elif _on_demand(inputs, policy, "on_demand" in held):
        responsiveness = "on_demand"
    else:
        responsiveness = "when_we_can"
        flags.append("when_we_can")
    if inputs.backlog_threads >= max(1, policy.thresholds.backlog_min_threads):
        flags.append("unanswered_backlog")
    state: State = "healthy"
    for candidate in _PRIORITY:
        if candidate in flags:
            state = candidate
            break
    return Verdict(state, tuple(flags), responsiveness)
