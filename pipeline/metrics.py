"""Every Prometheus metric of the gateway and the worker, and the capped per-community exporter.

One home for metric names, so dashboards, alert rules and code cannot drift apart:
``pipeline.dashboards`` and the observability tests read the names from here.

Conventions (https://prometheus.io/docs/practices/naming/): prefix ``pulse_``, base units
(seconds, ratios 0..1), ``_total`` on counters, help text on each. Every holder class takes
its own ``CollectorRegistry`` so the gateway and the worker (and tests) never share state.

Label values must come from small fixed sets (the ``*_REASONS``/``*_OUTCOMES`` tuples
below, platform names, partitions), never from payload content. Community ids are the one
unbounded label: only ``CommunityGauges`` exports them, for at most ``cap`` communities.

Usage::

    registry = CollectorRegistry()
    gm = GatewayMetrics(registry)
    gm.deliveries_received.labels(platform="github").inc()
    body, content_type = exposition(registry)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Container, Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from pipeline.results import RESPONSIVENESS, STATES, Flag, HealthSnapshot

PLATFORMS: tuple[str, ...] = ("github", "discourse", "slack", "generic")
"""Gateway routes; the ``platform`` label of gateway metrics is one of these."""

REFUSE_REASONS: tuple[str, ...] = (
    "unauthorized",  # missing/unknown bearer token (generic API)
    "signature",  # bad or missing webhook signature, Slack timestamp outside the window
    "payload",  # body is not a valid payload for the platform (400)
    "too_large",  # body above max_body_bytes (413)
    "media_type",  # unsupported content type (415)
    "rate_limited",  # the sender is over its per-second budget (429)
)
"""Why the gateway answered 4xx: the sender's fault."""

FAIL_REASONS: tuple[str, ...] = (
    "kafka_unavailable",  # no broker reachable / producer not ready
    "kafka_timeout",  # not acknowledged within produce_timeout_s
    "internal",  # a bug: unexpected exception
)
"""Why the gateway answered 5xx: our fault, the platform will retry."""

IGNORE_REASONS: tuple[str, ...] = ("ping", "private_message", "edit", "unsupported", "challenge", "other")
"""Why an accepted delivery produced no events (2xx, nothing to count)."""

LATE_OUTCOMES: tuple[str, ...] = ("applied", "dropped", "future")
DEAD_LETTER_REASONS: tuple[str, ...] = ("decode", "schema", "processing")
SINK_TABLES: tuple[str, ...] = ("events", "windows", "first_responses", "health")
FLAGS: tuple[Flag, ...] = ("dead", "dying", "one_poster", "unanswered_backlog", "when_we_can")

# Produce acknowledgements with acks=all: milliseconds on a healthy broker, up to the timeout.
PRODUCE_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# ClickHouse batch inserts: tens of ms embedded, up to seconds on a loaded server.
SINK_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The text exposition of ``registry`` and its content type, for a /metrics endpoint."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


# ---------------------------------------------------------------- gateway


class GatewayMetrics:
    """Metrics of the webhook gateway (one instance per gateway process / test registry).

    Plain counters, histograms and gauges only: with several gateway processes they run in
    prometheus-client's multiprocess mode, which has no custom collectors.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.deliveries_received = Counter(
            "pulse_gateway_deliveries_received",
            "Webhook deliveries and generic API requests received, before any check.",
            ["platform"],
            registry=registry,
        )
        self.deliveries_accepted = Counter(
            "pulse_gateway_deliveries_accepted",
            "Deliveries answered 2xx after Kafka acknowledged them (including ignored ones).",
            ["platform"],
            registry=registry,
        )
        self.deliveries_refused = Counter(
            "pulse_gateway_deliveries_refused",
            "Deliveries answered 4xx (the sender's fault), by reason.",
            ["platform", "reason"],
            registry=registry,
        )
        self.deliveries_failed = Counter(
            "pulse_gateway_deliveries_failed",
            "Deliveries answered 5xx (our fault; the platform retries), by reason.",
            ["platform", "reason"],
            registry=registry,
        )
        self.deliveries_ignored = Counter(
            "pulse_gateway_deliveries_ignored",
            "Accepted deliveries that produced no canonical event, by reason.",
            ["platform", "reason"],
            registry=registry,
        )
        self.events_produced = Counter(
            "pulse_gateway_events_produced",
            "Canonical events acknowledged by Kafka, by event kind.",
            ["platform", "kind"],
            registry=registry,
        )
        self.produce_latency = Histogram(
            "pulse_gateway_produce_latency_seconds",
            "Time from handing a delivery to the Kafka producer to its acknowledgement.",
            buckets=PRODUCE_BUCKETS,
            registry=registry,
        )
        # multiprocess_mode: how `pulse gateway --workers N` merges the processes' values
        # (pipeline.gateway.multiproc); ignored, and the exposition unchanged, in one process.
        self.requests_in_flight = Gauge(
            "pulse_gateway_requests_in_flight",
            "Requests being handled right now.",
            registry=registry,
            multiprocess_mode="livesum",  # the gateway's total; exited processes hold none
        )
        self.kafka_up = Gauge(
            "pulse_gateway_kafka_up",
            "1 when the gateway's Kafka producer can reach the cluster, else 0.",
            registry=registry,
            multiprocess_mode="livemin",  # 0 while any running process's producer cannot reach Kafka
        )
        # Series exist from the start, so rate() and alerts see 0 rather than no data.
        for platform in PLATFORMS:
            self.deliveries_received.labels(platform=platform)
            self.deliveries_accepted.labels(platform=platform)
            for reason in REFUSE_REASONS:
                self.deliveries_refused.labels(platform=platform, reason=reason)
            for reason in FAIL_REASONS:
                self.deliveries_failed.labels(platform=platform, reason=reason)
            for reason in IGNORE_REASONS:
                self.deliveries_ignored.labels(platform=platform, reason=reason)


# ---------------------------------------------------------------- worker and sink


class SinkMetrics:
    """Metrics of the ClickHouse sink; part of ``WorkerMetrics`` or standalone for a sink process."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.batches = Counter(
            "pulse_sink_batches",
            "Batches inserted into ClickHouse, by table.",
            ["table"],
            registry=registry,
        )
        self.rows = Counter(
            "pulse_sink_rows",
            "Rows inserted into ClickHouse, by table.",
            ["table"],
            registry=registry,
        )
        self.failures = Counter(
            "pulse_sink_failures",
            "Batch inserts into ClickHouse that failed (the batch is retried), by table.",
            ["table"],
            registry=registry,
        )
        self.batch_duration = Histogram(
            "pulse_sink_batch_seconds",
            "Time to insert one batch into ClickHouse.",
            buckets=SINK_BUCKETS,
            registry=registry,
        )
        for table in SINK_TABLES:
            self.batches.labels(table=table)
            self.rows.labels(table=table)
            self.failures.labels(table=table)


class WorkerMetrics:
    """Metrics of the stream worker, its sink and its communities (one per worker / test registry)."""

    def __init__(self, registry: CollectorRegistry, max_communities: int = 2000) -> None:
        self.events_processed = Counter(
            "pulse_worker_events_processed",
            "Canonical events applied to community state (after deduplication).",
            registry=registry,
        )
        self.duplicates = Counter(
            "pulse_worker_duplicates",
            "Events dropped because their event_id was already seen.",
            registry=registry,
        )
        self.late_events = Counter(
            "pulse_worker_late_events",
            "Events outside their window's grace: applied (within max lateness), dropped (older), "
            "or future (over 1 h ahead of the clock, dropped).",
            ["outcome"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "pulse_worker_dead_letters",
            "Messages sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=registry,
        )
        self.consumer_skips = Counter(
            "pulse_worker_consumer_skips",
            "Times the consumer skipped events of a partition (around a rebalance) and the worker "
            "read them from Kafka itself.",
            registry=registry,
        )
        self.recovery_reseeks = Counter(
            "pulse_worker_recovery_reseeks",
            "Times table recovery waited on changelog records its consumer had already read past "
            "without handing them over, and the worker sought the partition back.",
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "pulse_worker_consumer_lag_messages",
            "Events of each owned partition not yet processed: the partition's end minus the offset after "
            "the last event processed (or the group's committed offset, if further).",
            ["topic", "partition"],
            registry=registry,
        )
        self.stream_lag = Gauge(
            "pulse_worker_stream_lag_seconds",
            "Wall-clock time minus the event time of the newest event processed.",
            registry=registry,
        )
        self.kafka_up = Gauge(
            "pulse_worker_kafka_up",
            "1 when the worker's Kafka consumer can reach the cluster, else 0.",
            registry=registry,
        )
        for outcome in LATE_OUTCOMES:
            self.late_events.labels(outcome=outcome)
        for reason in DEAD_LETTER_REASONS:
            self.dead_letters.labels(reason=reason)
        self.sink = SinkMetrics(registry)
        self.communities = CommunityGauges(registry, max_communities)
        self._registry = registry

    def exposition(self, names: Collection[str] | None = None) -> bytes:
        """The /metrics page: the same text as ``generate_latest(registry)``, with the
        per-community series (tens of thousands at the default cap) rendered once per update
        by ``CommunityGauges.exposition`` instead of on every scrape by prometheus-client
        (about 1 s for 2,000 communities, on the worker's event loop).

        ``names``: only these series (Prometheus' ``name[]`` parameter, as prometheus-client's
        own handlers read it), for a client that polls a few of them often.
        """
        if names is not None:
            wanted = set(names)
            own = self.communities.family_names
            rest = wanted - own
            text = generate_latest(self._registry.restricted_registry(rest)) if rest else b""
            return text + self.communities.exposition(wanted & own)
        others = _RegistryWithout(self._registry, self.communities)
        if others.collectors is None:
            return generate_latest(self._registry)
        return generate_latest(others) + self.communities.exposition()


class _RegistryWithout:
    """A registry's collectors but one, for ``generate_latest``."""

    def __init__(self, registry: CollectorRegistry, left_out: Collector) -> None:
        # prometheus-client keeps its collectors in this private dict (every release since 0.1);
        # None if that ever changes, and the caller then renders the whole registry
        table = getattr(registry, "_collector_to_names", None)
        lock = getattr(registry, "_lock", None)
        self.collectors: list[Collector] | None = None
        if isinstance(table, dict) and lock is not None:
            with lock:
                self.collectors = [c for c in table if c is not left_out]

    def collect(self) -> Iterator[Metric]:
        for collector in self.collectors or ():
            yield from collector.collect()


# ---------------------------------------------------------------- communities: the pure part

CommunityKey = tuple[str, str]  # (platform, community_id): the labels of a per-community series


def community_key(snapshot: HealthSnapshot) -> CommunityKey:
    return (snapshot.platform, snapshot.community_id)


def latest_per_community(snapshots: Iterable[HealthSnapshot]) -> dict[CommunityKey, HealthSnapshot]:
    """One snapshot per community: the highest (stream_time, version, evaluated_at)."""
    latest: dict[CommunityKey, HealthSnapshot] = {}
    for snap in snapshots:
        key = community_key(snap)
        held = latest.get(key)
        if held is None or (snap.stream_time, snap.version, snap.evaluated_at) > (
            held.stream_time,
            held.version,
            held.evaluated_at,
        ):
            latest[key] = snap
    return latest


def export_priority(snapshot: HealthSnapshot) -> tuple[int, int, int, str, str]:
    """Sort key: flagged first, then most posts over 7 d, then 28 d; ids break ties."""
    return (
        0 if snapshot.flags else 1,
        -snapshot.posts_7d,
        -snapshot.posts_28d,
        snapshot.community_id,
        snapshot.platform,
    )


def select_exported(snapshots: Iterable[HealthSnapshot], cap: int) -> list[HealthSnapshot]:
    """The communities that get per-community series, in priority order (at most ``cap``)."""
    ranked = sorted(latest_per_community(snapshots).values(), key=export_priority)
    return ranked[: max(cap, 0)]


@dataclass(frozen=True)
class Sample:
    """One per-community series: metric name, extra labels beyond (community_id, platform), value."""

    metric: str
    labels: tuple[tuple[str, str], ...]
    value: float


# name -> (help, extra label names); the per-community families, in exposition order
COMMUNITY_FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "pulse_community_info": (
        "Always 1; carries the community's space and type for joins.",
        ("space_id", "community_type"),
    ),
    "pulse_community_state": ("1 for the community's current primary state, 0 for the others.", ("state",)),
    "pulse_community_flag": ("1 for each health rule that currently holds, 0 otherwise.", ("flag",)),
    "pulse_community_responsiveness": (
        "1 for the community's current responsiveness class, 0 for the others.",
        ("responsiveness",),
    ),
    "pulse_community_posts": ("Human posts (threads + replies) over the trailing range.", ("range",)),
    "pulse_community_baseline_posts_per_week": (
        "Weekly average of human posts over the 4 weeks before the last 7 days.",
        (),
    ),
    "pulse_community_active_members": ("Distinct human posters over the trailing range.", ("range",)),
    "pulse_community_top1_share": ("Share of posts by the most active poster over the range (0..1).", ("range",)),
    "pulse_community_threads_started": ("Threads started by humans over the trailing range.", ("range",)),
    "pulse_community_first_response_p50_seconds": (
        "Median time to a thread's first response by someone else over the range; absent without answers.",
        ("range",),
    ),
    "pulse_community_answered_within_sla_ratio": (
        "Share of the range's threads answered within the 24 h SLA (0..1); absent without threads.",
        ("range",),
    ),
    "pulse_community_unanswered_threads": ("Threads with no response from someone other than their author.", ()),
    "pulse_community_oldest_unanswered_age_seconds": (
        "Age of the oldest unanswered thread at the community's stream time; absent when none.",
        (),
    ),
    "pulse_community_last_post_timestamp_seconds": (
        "Unix time of the community's last human post; absent when none is known.",
        (),
    ),
    "pulse_community_stream_time_seconds": ("Unix time of the community's stream time (newest event time).", ()),
}


_Series = list[tuple[tuple[tuple[str, str], ...], float]]  # (extra labels, value) of one family

# metric -> its series of one snapshot; unknown values are left out, not NaN
_COMMUNITY_SERIES: dict[str, Callable[[HealthSnapshot], _Series]] = {
    "pulse_community_info": lambda s: [((("space_id", s.space_id), ("community_type", s.community_type)), 1)],
    "pulse_community_state": lambda s: [((("state", st),), st == s.state) for st in STATES],
    "pulse_community_flag": lambda s: [((("flag", f),), f in s.flags) for f in FLAGS],
    "pulse_community_responsiveness": lambda s: [
        ((("responsiveness", r),), r == s.responsiveness) for r in RESPONSIVENESS
    ],
    "pulse_community_posts": lambda s: [
        ((("range", "1h"),), s.posts_1h),
        ((("range", "24h"),), s.posts_24h),
        ((("range", "7d"),), s.posts_7d),
        ((("range", "28d"),), s.posts_28d),
    ],
    "pulse_community_baseline_posts_per_week": lambda s: [((), s.baseline_posts_per_week)],
    "pulse_community_active_members": lambda s: [((("range", "7d"),), s.active_members_7d)],
    "pulse_community_top1_share": lambda s: [((("range", "28d"),), s.top1_share_28d)],
    "pulse_community_threads_started": lambda s: [((("range", "7d"),), s.threads_started_7d)],
    "pulse_community_unanswered_threads": lambda s: [((), s.unanswered_threads)],
    "pulse_community_stream_time_seconds": lambda s: [((), s.stream_time.timestamp())],
    "pulse_community_first_response_p50_seconds": lambda s: (
        [] if s.first_response_p50_7d_s is None else [((("range", "7d"),), s.first_response_p50_7d_s)]
    ),
    "pulse_community_answered_within_sla_ratio": lambda s: (
        [] if s.answered_within_sla_7d is None else [((("range", "7d"),), s.answered_within_sla_7d)]
    ),
    "pulse_community_oldest_unanswered_age_seconds": lambda s: (
        [] if s.oldest_unanswered_age_s is None else [((), s.oldest_unanswered_age_s)]
    ),
    "pulse_community_last_post_timestamp_seconds": lambda s: (
        [] if s.last_post_at is None else [((), s.last_post_at.timestamp())]
    ),
}


def community_samples(snap: HealthSnapshot, families: Container[str] | None = None) -> list[Sample]:
    """Every per-community series of one snapshot (``families``: of those only, and only those
    are computed). Unknown values are left out, not NaN."""
    return [
        Sample(metric, labels, float(value))
        for metric, series in _COMMUNITY_SERIES.items()
        if families is None or metric in families
        for labels, value in series(snap)
    ]


@dataclass(frozen=True)
class CommunityView:
    """What the community collector exports at one moment (built by ``community_view``)."""

    by_state: dict[str, int]
    by_responsiveness: dict[str, int]
    exported: tuple[HealthSnapshot, ...]
    not_exported: int


def community_view(snapshots: Iterable[HealthSnapshot], cap: int) -> CommunityView:
    latest = latest_per_community(snapshots)
    by_state: dict[str, int] = dict.fromkeys(STATES, 0)
    by_resp: dict[str, int] = dict.fromkeys(RESPONSIVENESS, 0)
    for snap in latest.values():
        by_state[snap.state] += 1
        by_resp[snap.responsiveness] += 1
    exported = select_exported(latest.values(), cap)
    return CommunityView(by_state, by_resp, tuple(exported), len(latest) - len(exported))


# ---------------------------------------------------------------- communities: the collector


class CommunityGauges(Collector):
    """Per-community gauges for at most ``cap`` communities, plus counts that are always exported.

    ``update(snapshots)`` replaces the whole picture with the given communities' latest health
    (give it every community this process owns, e.g. the health table of its partitions: with
    several workers each exports only its own, and sums across instances are totals). Series of
    communities that are no longer selected disappear at the next scrape, because the collector
    renders from the current view rather than keeping labelled children around.
    """

    def __init__(self, registry: CollectorRegistry | None, cap: int = 2000) -> None:
        self.cap = cap
        self._lock = threading.Lock()
        self._view = community_view((), cap)
        self._rendered: tuple[CommunityView, bytes] | None = None
        # lines of each community at its last rendering, per family selection (None: the full
        # page), so a scrape renders only the communities whose snapshot changed since the last
        self._lines: dict[frozenset[str] | None, _LineCache] = {}
        self.family_names = frozenset(m.name for m in self.describe())
        if registry is not None:
            registry.register(self)

    def update(self, snapshots: Iterable[HealthSnapshot]) -> None:
        view = community_view(snapshots, self.cap)
        with self._lock:
            self._view = view

    @property
    def exported_keys(self) -> list[CommunityKey]:
        with self._lock:
            return [community_key(s) for s in self._view.exported]

    def describe(self) -> Iterable[Metric]:
        # Names only (no samples), so the registry can check for clashes at registration.
        return list(self._families(community_view((), self.cap)))

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            view = self._view
        return list(self._families(view))

    def exposition(self, names: Collection[str] | None = None) -> bytes:
        """This collector's part of /metrics in the text format, byte for byte what
        ``generate_latest`` makes of ``collect()``; rendered once per ``update``.

        ``names``: only these families, as a registry restricted to them writes them (a family
        left without samples is left out); rendered at each call, reusing the lines of
        communities unchanged since the last page with the same families.
        """
        if names is not None:
            families = frozenset(n for n in names if n in COMMUNITY_FAMILIES)
            with self._lock:  # the line caches are shared by concurrent scrapes
                view = self._view
                counts = [m for m in self._counts(view) if m.name in names and m.samples]
                page = generate_latest(_Families(counts))
                if families:
                    page += _render_communities(view.exported, self._line_cache(families), families)
                return page
        with self._lock:
            view, rendered = self._view, self._rendered
        if rendered is not None and rendered[0] is view:
            return rendered[1]
        with self._lock:
            text = generate_latest(_Families(list(self._counts(view)))) + _render_communities(
                view.exported, self._line_cache(None)
            )
            self._rendered = (view, text)
        return text

    def _line_cache(self, families: frozenset[str] | None) -> _LineCache:
        cache = self._lines.get(families)
        if cache is None:
            if len(self._lines) >= _LINE_CACHES:  # forget the selection seen first
                del self._lines[next(iter(self._lines))]
            cache = self._lines[families] = {}
        return cache

    def _families(self, view: CommunityView) -> Iterator[Metric]:
        yield from self._counts(view)
        families: dict[str, GaugeMetricFamily] = {}
        for name, (help_text, extra) in COMMUNITY_FAMILIES.items():
            families[name] = GaugeMetricFamily(name, help_text, labels=["community_id", "platform", *extra])
        for snap in view.exported:
            for sample in community_samples(snap):
                families[sample.metric].add_metric(
                    [snap.community_id, snap.platform, *(v for _, v in sample.labels)], sample.value
                )
        yield from families.values()

    def _counts(self, view: CommunityView) -> Iterator[Metric]:
        states = GaugeMetricFamily(
            "pulse_communities",
            "Communities known to this process, by primary health state.",
            labels=["state"],
        )
        for state, n in view.by_state.items():
            states.add_metric([state], n)
        yield states
        resp = GaugeMetricFamily(
            "pulse_communities_by_responsiveness",
            "Communities known to this process, by responsiveness class.",
            labels=["responsiveness"],
        )
        for cls, n in view.by_responsiveness.items():
            resp.add_metric([cls], n)
        yield resp
        yield GaugeMetricFamily(
            "pulse_communities_not_exported",
            "Communities left without per-community series because of the series cap.",
            value=view.not_exported,
        )
        yield GaugeMetricFamily(
            "pulse_communities_export_cap",
            "Most communities that get per-community series (settings.metrics_max_communities).",
            value=self.cap,
        )


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def _label_value(value: str) -> str:
    # the text format's escaping of label values (as prometheus-client writes them)
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


_Lines = list[tuple[str, str]]  # (family, line) of one community
_LineCache = dict[CommunityKey, tuple[HealthSnapshot, _Lines]]
# family selections whose lines are kept: the full page, Prometheus' own scrapes and a few more
_LINE_CACHES = 4


def _community_lines(snap: HealthSnapshot, families: Container[str] | None = None) -> _Lines:
    base = (("community_id", _label_value(snap.community_id)), ("platform", _label_value(snap.platform)))
    out: _Lines = []
    for sample in community_samples(snap, families):
        # prometheus-client writes labels sorted by name
        labels = sorted((*base, *((k, _label_value(v)) for k, v in sample.labels)))
        text = ",".join(f'{k}="{v}"' for k, v in labels)
        out.append((sample.metric, f"{sample.metric}{{{text}}} {floatToGoString(sample.value)}\n"))
    return out


def _render_communities(
    snapshots: Sequence[HealthSnapshot],
    cache: dict[CommunityKey, tuple[HealthSnapshot, _Lines]],
    families: Container[str] | None = None,
) -> bytes:
    """The per-community gauge families in the text format, without building prometheus-client
    samples. A community whose snapshot is the same object as last time reuses its lines (the
    worker hands over the same snapshot until something in it changed); ``cache`` (rendered
    with the same ``families``) is replaced by the lines of exactly these snapshots. With
    ``families``: only those, and only families with samples (as a restricted registry writes
    them)."""
    lines: dict[str, list[str]] = {name: [] for name in COMMUNITY_FAMILIES}
    fresh: _LineCache = {}
    for snap in snapshots:
        key = community_key(snap)
        held = cache.get(key)
        mine = held[1] if held is not None and held[0] is snap else _community_lines(snap, families)
        fresh[key] = (snap, mine)
        for family, line in mine:
            lines[family].append(line)
    cache.clear()
    cache.update(fresh)
    out: list[str] = []
    for name, (help_text, _) in COMMUNITY_FAMILIES.items():
        if families is not None and (name not in families or not lines[name]):
            continue
        escaped = help_text.replace("\\", "\\\\").replace("\n", "\\n")
        out.append(f"# HELP {name} {escaped}\n# TYPE {name} gauge\n")
        out.extend(lines[name])
    return "".join(out).encode()


def metric_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name a scrape of ``registry`` can show (with _total, _bucket, ... suffixes)."""
    names: set[str] = set()
    for family in registry.collect():
        if family.type == "counter":
            names.update({family.name + "_total", family.name + "_created"})
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_count", "_sum", "_created"))
        else:
            names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def all_metric_names() -> set[str]:
    """Names exported by the gateway and the worker together (for checking queries)."""
    gateway, worker = CollectorRegistry(), CollectorRegistry()
    GatewayMetrics(gateway)
    WorkerMetrics(worker)
    return metric_names(gateway) | metric_names(worker)


__all__: Sequence[str] = (
    "COMMUNITY_FAMILIES",
    "CommunityGauges",
    "CommunityView",
    "GatewayMetrics",
    "SinkMetrics",
    "WorkerMetrics",
    "all_metric_names",
    "community_samples",
    "community_view",
    "exposition",
    "latest_per_community",
    "metric_names",
    "select_exported",
)
