"""Serialization of one community's engine: compact JSON of plain lists.

Built from comprehensions over the engine's plain containers and written by one
``orjson.dumps`` (10x the standard library's C encoder on a real community's state): an
actor index table would halve the posters' size but cost more time than the whole dump.
Times are integer milliseconds (member times hour numbers). ``format`` guards against
reading a state written by an incompatible version. The policy is not part of the state:
it comes from the directory file at load time, so a threshold change applies to existing
state.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

import orjson

from pipeline.core.buckets import Bucket
from pipeline.core.dedupe import Deduper
from pipeline.core.health import Verdict
from pipeline.core.latency import Thread, ThreadBook
from pipeline.core.policy import CommunityPolicy
from pipeline.core.windows import DAY_MS, HOUR_MS, StreamClock, WindowsConfig
from pipeline.results import HealthSnapshot

if TYPE_CHECKING:
    from pipeline.core.engine import CommunityEngine

FORMAT = 1


class StateError(ValueError):
    """The bytes are not a state this version can read."""


def encode(engine: CommunityEngine) -> bytes:
    # comprehensions over plain containers, then one C-level orjson.dumps: this runs after
    # every batch, so it avoids per-item Python work beyond building the lists
    hour = HOUR_MS
    verdict = engine.verdict
    doc: dict[str, Any] = {
        "format": FORMAT,
        "id": [engine.community_id, engine.platform, engine.space_id],
        "config": _plain_config(engine.config),
        "clock": engine.clock.to_plain(),
        # member times are whole hours (see engine._note_member): stored as hour numbers
        "members": {a: [f // hour, last // hour] for a, (f, last) in engine.members.items()},
        "threads": {
            tid: [
                t.start_ms,
                t.author,
                t.c1_actor,
                t.c1_ms,
                t.c2_actor,
                t.c2_ms,
                t.emitted_version,
                t.emitted_ms,
                t.emitted_actor,
                t.emitted_start,
                # held replies only when there are any: most threads have none
                *([[list(h) for h in t.held]] if t.held else []),
            ]
            for tid, t in engine.threads.threads.items()
        },
        # answered threads kept for the 7 d views only: [day, [start, latency, start, latency, ...]]
        "settled": [
            [day, [x for start, fr in pairs for x in (start, fr - start)]]
            for day, pairs in engine.threads.settled.items()
        ],
        "hours": [b.to_plain() for b in engine.buckets["1h"].values()],
        "days": [b.to_plain() for b in engine.buckets["1d"].values()],
        "dedupe": engine.dedupe.to_plain(),
        "last_post": engine.last_post_ms,
        "verdict": [verdict.state, list(verdict.flags), verdict.responsiveness] if verdict else None,
        "snapshot": engine.snapshot.model_dump(mode="json") if engine.snapshot else None,
        "health": [engine.health_version, engine.last_health_eval_ms, engine.pruned_hour, engine.emitted_at_ms],
        "emitted_figures": list(engine.emitted_figures) if engine.emitted_figures is not None else None,
        "totals": [
            engine.total_duplicates,
            engine.total_late_applied,
            engine.total_late_dropped,
            engine.total_future_dropped,
        ],
    }
    return orjson.dumps(doc)


@lru_cache(maxsize=64)
def _plain_config(config: WindowsConfig) -> dict[str, Any]:
    # a worker's engines share a handful of (frozen) configs; asdict of one cost a tenth of a
    # small community's encode. Only read by orjson.dumps: never mutated.
    return config.to_plain()


def decode(data: bytes, policy: CommunityPolicy) -> CommunityEngine:
    from pipeline.core.engine import CommunityEngine

    try:
        doc = orjson.loads(data)
    except ValueError as exc:
        raise StateError(f"state is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise StateError(f"unknown state format: {doc.get('format') if isinstance(doc, dict) else doc!r}")
    community_id, platform, space_id = doc["id"]
    config = WindowsConfig.from_plain(doc["config"])
    engine = CommunityEngine(community_id, platform, space_id, policy, config)
    engine.clock = StreamClock.from_plain(config.idle_after_ms, doc["clock"])
    engine.members = {actor: [first * HOUR_MS, last * HOUR_MS] for actor, (first, last) in doc["members"].items()}
    threads = {tid: _thread(plain) for tid, plain in doc["threads"].items()}
    now = engine.clock.now
    # "recent" must be a superset of what the engine's pruning keeps (see engine._prune)
    recent_since = (now - 2 * config.max_lateness_ms - 2 * DAY_MS) if now is not None else 0
    settled = {  # absent from states written before it existed
        day: [(flat[i], flat[i] + flat[i + 1]) for i in range(0, len(flat), 2)] for day, flat in doc.get("settled", [])
    }
    engine.threads = ThreadBook.rebuild(threads, recent_since, settled)
    for size, key in (("1h", "hours"), ("1d", "days")):
        for plain in doc[key]:
            b = Bucket.from_plain(plain)
            engine.buckets[size][b.start_ms] = b
            if b.dirty:
                engine._dirty.add((size, b.start_ms))
            if not b.final:
                engine._note_pending(b.start_ms, size)
    engine.dedupe = Deduper.from_plain(config.dedupe_max_entries, doc["dedupe"])
    engine.last_post_ms = doc["last_post"]
    if doc["verdict"] is not None:
        state, flags, responsiveness = doc["verdict"]
        engine.verdict = Verdict(state, tuple(flags), responsiveness)
    if doc["snapshot"] is not None:
        engine.snapshot = HealthSnapshot.model_validate(doc["snapshot"])
    engine.health_version, engine.last_health_eval_ms, engine.pruned_hour = doc["health"][:3]
    # states saved before the figure refresh have neither: the next change emits as before
    engine.emitted_at_ms = doc["health"][3] if len(doc["health"]) > 3 else None
    figures = doc.get("emitted_figures")
    engine.emitted_figures = tuple(figures) if figures is not None else None
    totals = [*doc["totals"], 0][:4]  # states written before future_dropped existed have 3
    (
        engine.total_duplicates,
        engine.total_late_applied,
        engine.total_late_dropped,
        engine.total_future_dropped,
    ) = totals
    return engine


def _thread(plain: list[Any]) -> Thread:
    t = Thread(*plain[:10])
    if len(plain) > 10:
        t.held = [(at, actor) for at, actor in plain[10]]
    elif t.start_ms is None and t.c1_actor is not None:
        # written before replies were held: an orphan's replies were its two candidates
        t.held = [(ms, a) for a, ms in ((t.c1_actor, t.c1_ms), (t.c2_actor, t.c2_ms)) if a is not None]
        t.c1_actor = t.c2_actor = None
        t.c1_ms = t.c2_ms = 0
    return t
