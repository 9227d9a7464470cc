"""Metric definitions and the capped per-community exporter (pure logic + a real registry)."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from pipeline.metrics import (
    COMMUNITY_FAMILIES,
    FLAGS,
    CommunityGauges,
    GatewayMetrics,
    WorkerMetrics,
    all_metric_names,
    community_samples,
    community_view,
    export_priority,
    exposition,
    latest_per_community,
    metric_names,
    select_exported,
)
from pipeline.results import RESPONSIVENESS, STATES, HealthSnapshot

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def snap(
    cid: str,
    *,
    platform: str = "discourse",
    state: str = "healthy",
    flags: tuple[str, ...] = (),
    responsiveness: str = "no_demand",
    posts_7d: int = 0,
    posts_28d: int = 0,
    version: int = 1,
    stream_offset_s: int = 0,
    p50: float | None = None,
    last_post_at: datetime | None = None,
) -> HealthSnapshot:
    return HealthSnapshot.model_validate(
        {
            "community_id": cid,
            "platform": platform,
            "space_id": "space-1",
            "community_type": "open",
            "state": state,
            "flags": list(flags),
            "responsiveness": responsiveness,
            "stream_time": T0 + timedelta(seconds=stream_offset_s),
            "evaluated_at": T0,
            "posts_7d": posts_7d,
            "posts_28d": posts_28d,
            "first_response_p50_7d_s": p50,
            "last_post_at": last_post_at,
            "version": version,
        }
    )


snapshots_st = st.builds(
    lambda cid, platform, state, flags, resp, p7, p28, v, off: snap(
        cid,
        platform=platform,
        state=state,
        flags=tuple(flags),
        responsiveness=resp,
        posts_7d=p7,
        posts_28d=p28,
        version=v,
        stream_offset_s=off,
    ),
    st.sampled_from([f"c{i}" for i in range(12)]),
    st.sampled_from(["discourse", "slack"]),
    st.sampled_from(STATES),
    st.lists(st.sampled_from(FLAGS), unique=True, max_size=3),
    st.sampled_from(RESPONSIVENESS),
    st.integers(0, 50),
    st.integers(0, 200),
    st.integers(1, 5),
    st.integers(0, 3600),
)


# ---------------------------------------------------------------- the selector


@given(st.lists(snapshots_st, max_size=40), st.integers(0, 30))
def test_selection_is_capped_unique_and_accounts_for_everyone(snaps: list[HealthSnapshot], cap: int) -> None:
    chosen = select_exported(snaps, cap)
    keys = [(s.platform, s.community_id) for s in chosen]
    distinct = {(s.platform, s.community_id) for s in snaps}
    assert len(keys) == len(set(keys))
    assert len(chosen) == min(cap, len(distinct))
    view = community_view(snaps, cap)
    assert view.not_exported == len(distinct) - len(chosen)
    assert sum(view.by_state.values()) == len(distinct)
    assert sum(view.by_responsiveness.values()) == len(distinct)


@given(st.lists(snapshots_st, max_size=40), st.integers(0, 30))
def test_flagged_first_then_most_active(snaps: list[HealthSnapshot], cap: int) -> None:
    latest = list(latest_per_community(snaps).values())
    chosen = select_exported(snaps, cap)
    left_out = [s for s in latest if s not in chosen]
    for kept in chosen:
        for other in left_out:
            # nothing left out outranks anything kept
            if other.flags and not kept.flags:
                raise AssertionError(f"flagged {other.community_id} left out for unflagged {kept.community_id}")
            if bool(other.flags) == bool(kept.flags):
                assert kept.posts_7d >= other.posts_7d
    # and the kept ones come in priority order
    assert [export_priority(s) for s in chosen] == sorted(export_priority(s) for s in chosen)


@given(st.lists(snapshots_st, max_size=40), st.integers(0, 30), st.randoms())
def test_selection_does_not_depend_on_input_order(snaps: list[HealthSnapshot], cap: int, rnd: object) -> None:
    # Distinct (stream_time, version) per community, else "latest" is ambiguous by construction.
    latest = list(latest_per_community(snaps).values())
    shuffled = list(latest)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert select_exported(shuffled, cap) == select_exported(latest, cap)


@given(st.lists(snapshots_st, min_size=1, max_size=40))
def test_latest_snapshot_wins(snaps: list[HealthSnapshot]) -> None:
    latest = latest_per_community(snaps)
    for s in snaps:
        held = latest[(s.platform, s.community_id)]
        assert (held.stream_time, held.version) >= (s.stream_time, s.version)


def test_cap_zero_exports_only_counts() -> None:
    view = community_view([snap("a", flags=("dead",), state="dead"), snap("b")], 0)
    assert view.exported == ()
    assert view.not_exported == 2
    assert view.by_state["dead"] == 1 and view.by_state["healthy"] == 1


# ---------------------------------------------------------------- samples of one community


@given(snapshots_st)
def test_samples_are_one_hot_and_use_known_families(s: HealthSnapshot) -> None:
    samples = community_samples(s)
    assert {x.metric for x in samples} <= set(COMMUNITY_FAMILIES)
    for x in samples:
        assert [k for k, _ in x.labels] == list(COMMUNITY_FAMILIES[x.metric][1])
    state = {dict(x.labels)["state"]: x.value for x in samples if x.metric == "pulse_community_state"}
    assert state == {st_: float(st_ == s.state) for st_ in STATES}
    flags = {dict(x.labels)["flag"]: x.value for x in samples if x.metric == "pulse_community_flag"}
    assert flags == {f: float(f in s.flags) for f in FLAGS}
    # asking for some families computes exactly their samples
    for some in ({"pulse_community_posts"}, {"pulse_community_state", "pulse_community_flag"}, set(), {"other"}):
        assert community_samples(s, some) == [x for x in samples if x.metric in some]


def test_every_community_family_has_its_series_and_only_those() -> None:
    # the families (help, labels) and the functions computing their series are two tables
    full = snap("busy", p50=90.0, last_post_at=T0).model_copy(
        update={"answered_within_sla_7d": 0.5, "oldest_unanswered_age_s": 60.0}
    )
    assert {x.metric for x in community_samples(full)} == set(COMMUNITY_FAMILIES)


def test_unknown_values_are_absent_not_nan() -> None:
    names = {x.metric for x in community_samples(snap("quiet"))}
    assert "pulse_community_first_response_p50_seconds" not in names
    assert "pulse_community_last_post_timestamp_seconds" not in names
    known = snap("busy", p50=90.0, last_post_at=T0)
    values = {x.metric: x.value for x in community_samples(known)}
    assert values["pulse_community_first_response_p50_seconds"] == 90.0
    assert values["pulse_community_last_post_timestamp_seconds"] == T0.timestamp()


# ---------------------------------------------------------------- the collector in a real registry


def test_gauges_follow_updates_and_drop_communities_that_leave() -> None:
    registry = CollectorRegistry()
    gauges = CommunityGauges(registry, cap=2)

    def state(cid: str, value: str) -> float | None:
        return registry.get_sample_value(
            "pulse_community_state", {"community_id": cid, "platform": "discourse", "state": value}
        )

    # before any update the counts exist and are 0
    assert registry.get_sample_value("pulse_communities", {"state": "dead"}) == 0
    gauges.update([snap("a", posts_7d=5), snap("b", posts_7d=9), snap("c", posts_7d=1)])
    assert gauges.exported_keys == [("discourse", "b"), ("discourse", "a")]
    assert state("b", "healthy") == 1 and state("b", "dead") == 0
    assert state("c", "healthy") is None
    assert registry.get_sample_value("pulse_communities_not_exported") == 1
    assert registry.get_sample_value("pulse_communities", {"state": "healthy"}) == 3

    # c becomes flagged: it enters, the least active of the others (a) leaves
    gauges.update([snap("a", posts_7d=5), snap("b", posts_7d=9), snap("c", state="dead", flags=("dead",))])
    assert state("c", "dead") == 1
    assert state("a", "healthy") is None
    assert not any(s.labels.get("community_id") == "a" for fam in registry.collect() for s in fam.samples)
    labels = {"community_id": "c", "platform": "discourse", "flag": "dead"}
    assert registry.get_sample_value("pulse_community_flag", labels) == 1
    assert registry.get_sample_value("pulse_communities", {"state": "dead"}) == 1

    # an empty update (e.g. partitions revoked) removes every per-community series
    gauges.update([])
    assert gauges.exported_keys == []
    assert state("c", "dead") is None
    assert registry.get_sample_value("pulse_communities", {"state": "dead"}) == 0


def test_registries_are_independent() -> None:
    one, two = CollectorRegistry(), CollectorRegistry()
    g1, g2 = GatewayMetrics(one), GatewayMetrics(two)
    g1.deliveries_received.labels(platform="github").inc(3)
    assert one.get_sample_value("pulse_gateway_deliveries_received_total", {"platform": "github"}) == 3
    assert two.get_sample_value("pulse_gateway_deliveries_received_total", {"platform": "github"}) == 0
    del g2
    WorkerMetrics(CollectorRegistry())
    WorkerMetrics(CollectorRegistry())  # no "duplicated timeseries" between registries


def test_names_follow_conventions() -> None:
    names = all_metric_names()
    assert names, "no metric collected"
    for name in names:
        assert name.startswith("pulse_"), name
    worker = CollectorRegistry()
    WorkerMetrics(worker)
    for family in worker.collect():
        assert family.documentation.strip(), family.name
        if family.type == "counter":
            assert any(s.name == family.name + "_total" for s in family.samples), family.name
    assert "pulse_community_flag" in metric_names(worker)
    assert "pulse_gateway_produce_latency_seconds_bucket" in names


def _populated_expositions() -> list[bytes]:
    gw, wk = CollectorRegistry(), CollectorRegistry()
    g = GatewayMetrics(gw)
    g.deliveries_received.labels(platform="slack").inc()
    g.produce_latency.observe(0.02)
    g.kafka_up.set(1)
    w = WorkerMetrics(wk, max_communities=3)
    w.consumer_lag.labels(topic="engagement.events", partition="0").set(4)
    w.sink.batch_duration.observe(0.1)
    w.communities.update(
        [snap(f"c{i}", flags=("dying",) if i % 2 else (), p50=60.0, last_post_at=T0) for i in range(5)]
    )
    return [exposition(gw)[0], w.exposition()]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus) not installed")
@pytest.mark.parametrize("which", [0, 1], ids=["gateway", "worker"])
def test_promtool_check_metrics_accepts_exposition(which: int) -> None:
    body = _populated_expositions()[which]
    done = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


@settings(max_examples=30)
@given(st.lists(snapshots_st, max_size=20), st.integers(0, 10))
def test_exposition_series_match_the_view(snaps: list[HealthSnapshot], cap: int) -> None:
    registry = CollectorRegistry()
    CommunityGauges(registry, cap).update(snaps)
    exported = {(s.platform, s.community_id) for s in select_exported(snaps, cap)}
    seen = {
        (s.labels["platform"], s.labels["community_id"])
        for fam in registry.collect()
        for s in fam.samples
        if "community_id" in s.labels
    }
    assert seen == exported


@given(st.lists(snapshots_st, max_size=40), st.integers(1, 4), st.integers(0, 10))
def test_workers_owning_disjoint_partitions_add_up(snaps: list[HealthSnapshot], workers: int, cap: int) -> None:
    # each worker exports only the communities of its partitions: counts add up across workers
    owned: list[list[HealthSnapshot]] = [[] for _ in range(workers)]
    for s in snaps:
        owned[sum(map(ord, s.community_id)) % workers].append(s)
    registries = [CollectorRegistry() for _ in range(workers)]
    for registry, mine in zip(registries, owned, strict=True):
        CommunityGauges(registry, cap).update(mine)
    whole = community_view(snaps, cap=len(snaps))
    for state in STATES:
        total = sum(r.get_sample_value("pulse_communities", {"state": state}) or 0 for r in registries)
        assert total == whole.by_state[state]
    exported = [
        (s.labels["platform"], s.labels["community_id"])
        for r in registries
        for fam in r.collect()
        if fam.name == "pulse_community_info"
        for s in fam.samples
    ]
    assert len(exported) == len(set(exported))  # no community exported twice
    not_exported = sum(r.get_sample_value("pulse_communities_not_exported") or 0 for r in registries)
    assert len(exported) + not_exported == len(whole.exported)


# ---------------------------------------------------------------- the worker's page, pre-rendered

awkward_ids = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)


@settings(max_examples=60)
@given(
    st.lists(
        st.builds(
            lambda cid, base, p50: snap(cid, flags=("dying",), posts_7d=3, p50=p50, last_post_at=T0)
            if base
            else snap(cid),
            awkward_ids | st.sampled_from(['a"b', "back\\slash", "new\nline", "ünï"]),
            st.booleans(),
            st.none() | st.floats(0, 1e9),
        ),
        max_size=12,
    ),
    st.integers(0, 12),
)
def test_prerendered_community_series_are_what_prometheus_client_writes(
    snaps: list[HealthSnapshot], cap: int
) -> None:
    from prometheus_client import generate_latest

    registry = CollectorRegistry()
    w = WorkerMetrics(registry, max_communities=cap)
    w.events_processed.inc(3)
    w.communities.update(snaps)

    class Only:
        def collect(self):  # type: ignore[no-untyped-def]
            return w.communities.collect()

    # the collector's own part: byte for byte
    assert w.communities.exposition() == generate_latest(Only())
    # the whole page: the same lines as the registry rendered by prometheus-client, every family once
    page = w.exposition()
    assert sorted(page.splitlines()) == sorted(generate_latest(registry).splitlines())
    # rendered once per update: the same bytes object until the next update
    assert w.communities.exposition() is w.communities.exposition()
    # a community's lines are reused while its snapshot is the same object, redone when it changes
    changed = [s.model_copy(update={"posts_7d": s.posts_7d + 7, "state": "dead"}) for s in snaps[:1]]
    for update in (snaps[:1], changed + snaps[1:], snaps):
        w.communities.update(update)
        # (before the full page: changed communities have no cached lines yet)
        # ?name[]=...: what prometheus-client's own handlers write for a registry restricted to them
        for names in (
            {"pulse_community_posts"},
            {"pulse_community_posts", "pulse_worker_events_processed_total", "pulse_communities"},
            {"pulse_community_first_response_p50_seconds", "pulse_community_last_post_timestamp_seconds"},
            {"pulse_worker_duplicates_total"},
            {"no_such_metric"},
        ):
            restricted = generate_latest(registry.restricted_registry(names))
            assert sorted(w.exposition(names).splitlines()) == sorted(restricted.splitlines())
        assert w.communities.exposition() == generate_latest(Only())
        assert sorted(w.exposition().splitlines()) == sorted(generate_latest(registry).splitlines())


def test_a_filtered_page_renders_only_the_communities_that_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.metrics as metrics_module

    rendered: list[str] = []
    render = metrics_module._community_lines

    def counting(s: HealthSnapshot, families: object = None) -> object:
        rendered.append(s.community_id)
        return render(s, families)  # type: ignore[arg-type]

    monkeypatch.setattr(metrics_module, "_community_lines", counting)
    w = WorkerMetrics(CollectorRegistry(), max_communities=10)
    snaps = [snap(f"c{i}", posts_7d=i) for i in range(5)]
    posts = {"pulse_community_posts"}
    w.communities.update(snaps)
    first = w.exposition(posts)
    assert sorted(rendered) == [f"c{i}" for i in range(5)]
    rendered.clear()
    assert w.exposition(posts) == first  # nothing changed: nothing rendered again
    assert rendered == []
    changed = snaps[2].model_copy(update={"posts_7d": 99})
    w.communities.update([*snaps[:2], changed, *snaps[3:]])
    page = w.exposition(posts)
    assert rendered == ["c2"]
    assert b'community_id="c2",platform="discourse",range="7d"} 99.0' in page
    # another selection has lines of its own: rendered once, then reused too
    rendered.clear()
    w.exposition({"pulse_community_posts", "pulse_community_active_members"})
    w.exposition({"pulse_community_posts", "pulse_community_active_members"})
    assert sorted(rendered) == [f"c{i}" for i in range(5)]
