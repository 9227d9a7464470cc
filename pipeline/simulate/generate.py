"""The simulation plan: N communities with behaviours -> signed requests (pure, seeded).

Community ``i`` gets behaviour ``behaviours[i % B]`` and a platform that rotates
so that the first B x P communities cover every behaviour on every platform. The same spec
and seed always give the same requests (apart from the Slack signing time,
``signed_at``, which is a parameter).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from pipeline.simulate.behaviours import BEHAVIOURS, community_actions
from pipeline.simulate.model import Request
from pipeline.simulate.render import Community, Credentials, Renderer

PLATFORMS = ("github", "discourse", "slack", "generic")
GENERIC_BATCH = 200  # canonical events per /v1/events request at most


@dataclass(frozen=True)
class Spec:
    communities: int
    behaviours: tuple[str, ...]
    platforms: tuple[str, ...]
    days: float
    end: datetime
    seed: int = 1

    def __post_init__(self) -> None:
        if self.communities < 1:
            raise ValueError("communities must be at least 1")
        unknown = [b for b in self.behaviours if b not in BEHAVIOURS]
        if unknown or not self.behaviours:
            raise ValueError(f"behaviours must be among {', '.join(BEHAVIOURS)}; got {unknown or 'none'}")
        unknown = [p for p in self.platforms if p not in PLATFORMS]
        if unknown or not self.platforms:
            raise ValueError(f"platforms must be among {', '.join(PLATFORMS)}; got {unknown or 'none'}")
        if not 0 < self.days <= 400:
            raise ValueError("days must be between 0 and 400")
        if self.end.tzinfo is None:
            raise ValueError("end must carry a time zone")

    @property
    def start(self) -> datetime:
        return self.end - timedelta(days=self.days)


def plan(spec: Spec) -> list[Community]:
    b, p = len(spec.behaviours), len(spec.platforms)
    cycle = math.lcm(b, p)
    # (i % b, (i + i // lcm) % p) visits every behaviour x platform pair within the first b * p
    return [
        Community(index=i, platform=spec.platforms[(i + i // cycle) % p], behaviour=spec.behaviours[i % b])
        for i in range(spec.communities)
    ]


def generate(spec: Spec, credentials: Credentials, signed_at: float) -> list[Request]:
    """Every request of the simulation, in event-time order."""
    requests: list[Request] = []
    for community in plan(spec):
        rng = random.Random(f"{spec.seed}:{community.index}")
        actions = community_actions(community.behaviour, spec.start, spec.end, rng)
        renderer = Renderer(community, rng, credentials, signed_at)
        rendered = [r for action in actions for r in renderer.render(action)]
        if community.platform == "generic":
            rendered = _batch_generic(rendered, credentials)
        requests += rendered
    requests.sort(key=lambda r: r.occurred_at or spec.end)
    return requests


def _batch_generic(events: Sequence[Request], credentials: Credentials) -> list[Request]:
    """One NDJSON request per community-hour (at most GENERIC_BATCH events): how exporters send."""
    batches: list[list[Request]] = []
    for event in events:
        hour = event.occurred_at.replace(minute=0, second=0, microsecond=0) if event.occurred_at else None
        last = batches[-1] if batches else None
        if (
            last
            and len(last) < GENERIC_BATCH
            and last[0].occurred_at
            and hour == last[0].occurred_at.replace(minute=0, second=0, microsecond=0)
        ):
            last.append(event)
        else:
            batches.append([event])
    headers = {"Content-Type": "application/x-ndjson"}
    if credentials.ingest:
        headers["Authorization"] = f"Bearer {credentials.ingest[1]}"
    return [
        Request(
            "generic",
            "/v1/events",
            dict(headers),
            b"\n".join(e.body for e in batch) + b"\n",
            occurred_at=batch[-1].occurred_at,
            meta=batch[0].meta | {"events": len(batch)},
        )
        for batch in batches
    ]
