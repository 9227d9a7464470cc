"""Health thresholds and community type: the per-community policy the health rules read.

Pure data. ``pipeline.communities`` parses them from the directory file; the
defaults are those of DESIGN.md ("Health"). Every *_exit_* value is the
hysteresis margin: a rule is entered at its threshold and left only once the
signal has moved clearly past it, so a community sitting on a threshold does
not flap between states.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from pipeline.results import CommunityType

DAY_S = 86_400.0
HOUR_S = 3_600.0


@dataclass(frozen=True)
class HealthThresholds:
    # dead: no human post for >= dead_after_s. Left on the next human post (time-based, cannot flap).
    dead_after_s: float = 14 * DAY_S
    # dying: posts(7 d) < dying_ratio x weekly average of the 4 weeks before, baseline >= min.
    dying_ratio: float = 0.5
    dying_min_baseline: float = 10.0
    # ...left only when posts(7 d) >= 0.6 x baseline, or the baseline falls below 8 posts/week.
    dying_exit_ratio: float = 0.6
    dying_exit_min_baseline: float = 8.0
    # one_poster: over 28 d, >= 10 posts and top-1 share >= 0.9 (open) / 0.6 (team).
    one_poster_min_posts: int = 10
    one_poster_share_open: float = 0.9
    one_poster_share_team: float = 0.6
    # ...left only when the share drops 0.1 below the entry threshold or posts(28 d) < 8.
    one_poster_exit_margin: float = 0.1
    one_poster_exit_min_posts: int = 8
    # on_demand: over 7 d, median first response <= 1 h and >= 80 % answered within the SLA.
    on_demand_p50_s: float = HOUR_S
    on_demand_share: float = 0.8
    # ...left only when the median exceeds 1.5 h or the share falls below 70 %.
    on_demand_exit_p50_s: float = 1.5 * HOUR_S
    on_demand_exit_share: float = 0.7
    # the response SLA: a thread with no non-author response after this is backlog.
    sla_s: float = DAY_S
    # unanswered_backlog: at least this many threads past the SLA (discrete: no margin needed).
    backlog_min_threads: int = 1

    def with_overrides(self, overrides: dict[str, Any]) -> HealthThresholds:
        known = {f.name: f.type for f in fields(self)}
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ValueError(f"unknown threshold(s): {', '.join(unknown)}")
        clean: dict[str, Any] = {}
        for name, value in overrides.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"threshold {name} must be a number, got {value!r}")
            if value < 0:
                raise ValueError(f"threshold {name} must not be negative, got {value!r}")
            clean[name] = int(value) if known[name] == "int" else float(value)
        return replace(self, **clean)


@dataclass(frozen=True)
class CommunityPolicy:
    """What the health rules need to know about one community."""

    community_type: CommunityType = "open"
    thresholds: HealthThresholds = field(default_factory=HealthThresholds)

    def one_poster_share(self) -> float:
        t = self.thresholds
        return t.one_poster_share_team if self.community_type == "team" else t.one_poster_share_open


DEFAULT_POLICY = CommunityPolicy()
