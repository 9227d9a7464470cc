"""The three dashboards: overview, community detail and pipeline health.

Queries name only metrics of pipeline/metrics.py; tests/observability checks each one against
a real Prometheus. Per-community series exist for at most metrics_max_communities communities
(flagged first), so the ClickHouse tables are the complete lists; the Prometheus panels are
the live view. Sums over `pulse_communities` add up the workers (each exports its partitions).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus
from grafana_foundation_sdk.models import dashboard as dm

from pipeline.dashboards.panels import (
    COMMUNITY_DASHBOARD_UID,
    PROMETHEUS,
    ClickHouse,
    community_link,
    grid,
    prom,
    row,
    series,
    single,
    states,
)

RATE = "$__rate_interval"
TAGS = ["community-pulse"]


def _board(uid: str, title: str, description: str) -> dash.Dashboard:
    return (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .time("now-24h", "now")
        .refresh("30s")
        .timezone("utc")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .link(dash.DashboardLink("Community Pulse").type(dm.DashboardLinkType.DASHBOARDS).tags(TAGS).as_dropdown(True))
    )


# ---------------------------------------------------------------- overview


def overview() -> dash.Dashboard:
    board = _board(
        "pulse-overview",
        "Community Pulse / Overview",
        "Which communities are dying, dead, carried by one poster or slow to answer, across every platform.",
    )
    for state, title in (("dead", "Dead"), ("dying", "Dying"), ("one_poster", "One-poster"), ("healthy", "Healthy")):
        board = board.with_panel(
            single(
                f"{title} communities",
                prom(f'sum(pulse_communities{{state="{state}"}})'),
                description=f"Communities whose primary state is {state}.",
                width=4,
            )
        )
    board = board.with_panel(
        single(
            "Without per-community series",
            prom("sum(pulse_communities_not_exported)"),
            description="Communities beyond the metrics cap: only the ClickHouse table below lists them.",
            width=4,
        )
    ).with_panel(
        single(
            "Unanswered threads",
            prom("sum(pulse_community_unanswered_threads)"),
            description="Threads without a response from someone other than their author (exported communities).",
            width=4,
        )
    )
    board = (
        board.with_row(row("States over time"))
        .with_panel(
            series(
                "Communities per state",
                [prom("sum by (state) (pulse_communities)", "{{state}}")],
                stacked=True,
                description="Counts come from every community the workers know, not only the exported ones.",
            )
        )
        .with_panel(
            series(
                "Communities per responsiveness class",
                [prom("sum by (responsiveness) (pulse_communities_by_responsiveness)", "{{responsiveness}}")],
                stacked=True,
            )
        )
        .with_row(row("Flagged communities"))
        .with_panel(
            grid(
                "Flagged communities (live)",
                prom(
                    "max by (community_id, platform, flag) (pulse_community_flag == 1)",
                    instant=True,
                ),
                description="Every health rule that holds now, one row per community and flag. Click an id for detail.",
                hide=("Time", "Value"),
                links={"community_id": community_link()},
                width=12,
                height=10,
            )
        )
        .with_panel(
            grid(
                "Most active communities (posts, 7 d)",
                prom(
                    'topk(20, max by (community_id, platform) (pulse_community_posts{range="7d"}))',
                    instant=True,
                ),
                hide=("Time",),
                links={"community_id": community_link()},
                width=12,
                height=10,
            )
        )
        .with_row(row("Activity and response trends"))
        .with_panel(
            series(
                "Human posts in the last 24 h (exported communities)",
                [prom('sum(pulse_community_posts{range="24h"})', "posts 24 h")],
            )
        )
        .with_panel(
            series(
                "Active members, 7 d (exported communities)",
                [prom('sum(pulse_community_active_members{range="7d"})', "active members")],
            )
        )
        .with_panel(
            series(
                "First response p50 across communities",
                [
                    prom(
                        'quantile(0.5, pulse_community_first_response_p50_seconds{range="7d"})',
                        "median community",
                    ),
                    prom(
                        'quantile(0.9, pulse_community_first_response_p50_seconds{range="7d"})',
                        "slowest 10 %",
                        ref="B",
                    ),
                ],
                unit="s",
            )
        )
        .with_panel(
            series(
                "Answered within 24 h",
                [prom('avg(pulse_community_answered_within_sla_ratio{range="7d"})', "mean share")],
                unit="percentunit",
            )
        )
        .with_row(row("All communities (ClickHouse)"))
        .with_panel(
            grid(
                "Latest health of every community",
                ClickHouse(
                    """
                    SELECT community_id, platform, state, arrayStringConcat(flags, ', ') AS flags,
                           responsiveness, posts_7d, posts_28d, active_members_7d, top1_share_28d,
                           first_response_p50_7d_s, unanswered_threads, last_post_at, stream_time
                    FROM health_snapshots
                    ORDER BY community_id, stream_time DESC, version DESC, evaluated_at DESC
                    LIMIT 1 BY community_id
                    """
                ),
                source="clickhouse",
                description="Every community, including those beyond the metrics cap (needs a ClickHouse server).",
                links={"community_id": community_link()},
                height=12,
            )
        )
    )
    return board


# ---------------------------------------------------------------- community detail

C = 'community_id="$community"'


def community() -> dash.Dashboard:
    variable = (
        dash.QueryVariable("community")
        .label("Community")
        .datasource(PROMETHEUS)
        .query("label_values(pulse_community_info, community_id)")
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
    )
    board = _board(
        COMMUNITY_DASHBOARD_UID,
        "Community Pulse / Community",
        "One community: state, activity, members, concentration, first response and unanswered threads.",
    ).with_variable(variable)
    board = (
        board.with_panel(
            states(
                "State",
                [prom(f"max by (state) (pulse_community_state{{{C}}})", "{{state}}")],
                description="Primary state over time (dead > dying > one_poster > healthy).",
                width=12,
                on=("current", "blue"),
            )
        )
        .with_panel(
            states(
                "Flags",
                [prom(f"max by (flag) (pulse_community_flag{{{C}}})", "{{flag}}")],
                description="Every rule that holds, including unanswered_backlog and when_we_can.",
                width=12,
            )
        )
        .with_row(row("Activity and members"))
        .with_panel(
            series(
                "Human posts over trailing ranges",
                [
                    prom(f"max by (range) (pulse_community_posts{{{C}}})", "posts {{range}}"),
                    prom(f"max(pulse_community_baseline_posts_per_week{{{C}}})", "baseline per week", ref="B"),
                ],
                description="Dying: posts 7d below half the baseline (with a baseline of at least 10 a week).",
            )
        )
        .with_panel(
            series(
                "Active members and threads started (7 d)",
                [
                    prom(f'max(pulse_community_active_members{{{C},range="7d"}})', "active members"),
                    prom(f'max(pulse_community_threads_started{{{C},range="7d"}})', "threads started", ref="B"),
                ],
            )
        )
        .with_panel(
            series(
                "Concentration: top poster's share (28 d)",
                [prom(f'max(pulse_community_top1_share{{{C},range="28d"}})', "top-1 share")],
                unit="percentunit",
                description="One-poster: at least 10 posts and a top-1 share of 0.9 (open) or 0.6 (team).",
            )
        )
        .with_panel(
            single(
                "Since the last human post",
                prom(f"time() - max(pulse_community_last_post_timestamp_seconds{{{C}}})"),
                unit="s",
                no_value="never",
                width=12,
                height=8,
                description="Dead after 14 days without a human post (default).",
            )
        )
        .with_row(row("Responsiveness"))
        .with_panel(
            series(
                "First response p50 (7 d)",
                [prom(f'max(pulse_community_first_response_p50_seconds{{{C},range="7d"}})', "p50")],
                unit="s",
            )
        )
        .with_panel(
            series(
                "Answered within 24 h (7 d)",
                [prom(f'max(pulse_community_answered_within_sla_ratio{{{C},range="7d"}})', "share")],
                unit="percentunit",
            )
        )
        .with_panel(
            series(
                "Unanswered threads",
                [prom(f"max(pulse_community_unanswered_threads{{{C}}})", "unanswered")],
            )
        )
        .with_panel(
            series(
                "Oldest unanswered thread age",
                [prom(f"max(pulse_community_oldest_unanswered_age_seconds{{{C}}})", "age")],
                unit="s",
            )
        )
        .with_row(row("Drill-down (ClickHouse)"))
        .with_panel(
            grid(
                "Daily windows",
                ClickHouse(
                    """
                    SELECT window_start, posts, threads_started, replies, reactions, active_members,
                           new_members, top1_share, gini, absence_factor, first_response_p50_s,
                           first_response_p90_s, threads_answered, threads_unanswered, bot_posts, final
                    FROM window_results FINAL
                    WHERE community_id = '${community}' AND window = '1d' AND $__timeFilter(window_start)
                    ORDER BY window_start DESC
                    """
                ),
                source="clickhouse",
                height=10,
            )
        )
        .with_panel(
            grid(
                "Recent first responses",
                ClickHouse(
                    """
                    SELECT thread_id, thread_author_id, thread_started_at, responder_id, responded_at, latency_s
                    FROM first_responses FINAL
                    WHERE community_id = '${community}' AND $__timeFilter(thread_started_at)
                    ORDER BY thread_started_at DESC
                    LIMIT 200
                    """
                ),
                source="clickhouse",
                width=12,
                height=10,
            )
        )
        .with_panel(
            grid(
                "Threads still unanswered",
                ClickHouse(
                    """
                    SELECT thread_id, actor_id AS author_id, occurred_at AS started_at
                    FROM events
                    WHERE community_id = '${community}' AND kind = 'thread_started' AND actor_type != 'bot'
                      AND thread_id NOT IN (
                        SELECT thread_id FROM first_responses WHERE community_id = '${community}')
                    ORDER BY occurred_at
                    LIMIT 200
                    """
                ),
                source="clickhouse",
                width=12,
                height=10,
            )
        )
    )
    return board


# ---------------------------------------------------------------- pipeline health


def pipeline_health() -> dash.Dashboard:
    def by(metric: str, labels: str, window: str = RATE) -> str:
        return f"sum by ({labels}) (rate({metric}[{window}]))"

    def quantiles(metric: str) -> list[prometheus.Dataquery]:
        return [
            prom(f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket[{RATE}])))", f"p{int(q * 100)}", ref=r)
            for q, r in ((0.5, "A"), (0.99, "B"))
        ]

    board = _board(
        "pulse-pipeline",
        "Community Pulse / Pipeline health",
        "Gateway, Kafka, worker and ClickHouse sink: throughput, refusals, lag, late events and failures.",
    )
    board = (
        board.with_row(row("Gateway"))
        .with_panel(
            series(
                "Deliveries received and accepted per second",
                [
                    prom(by("pulse_gateway_deliveries_received_total", "platform"), "received {{platform}}"),
                    prom(by("pulse_gateway_deliveries_accepted_total", "platform"), "accepted {{platform}}", ref="B"),
                ],
                unit="reqps",
            )
        )
        .with_panel(
            series(
                "Refused (4xx) by reason",
                [prom(by("pulse_gateway_deliveries_refused_total", "platform, reason"), "{{platform}} {{reason}}")],
                unit="reqps",
                description="signature: a webhook secret changed; payload: the platform changed its payload.",
            )
        )
        .with_panel(
            series(
                "Failed (5xx) by reason",
                [prom(by("pulse_gateway_deliveries_failed_total", "platform, reason"), "{{platform}} {{reason}}")],
                unit="reqps",
            )
        )
        .with_panel(
            series(
                "Ignored deliveries by reason",
                [prom(by("pulse_gateway_deliveries_ignored_total", "platform, reason"), "{{platform}} {{reason}}")],
                unit="reqps",
            )
        )
        .with_panel(
            series(
                "Events produced by kind",
                [prom(by("pulse_gateway_events_produced_total", "kind"), "{{kind}}")],
                unit="ops",
                stacked=True,
            )
        )
        .with_panel(series("Kafka produce latency", quantiles("pulse_gateway_produce_latency_seconds"), unit="s"))
        .with_panel(
            series(
                "Requests in flight",
                [prom("sum(pulse_gateway_requests_in_flight)", "in flight")],
            )
        )
        .with_panel(
            states(
                "Kafka reachable",
                [
                    prom("min by (instance) (pulse_gateway_kafka_up)", "gateway {{instance}}"),
                    prom("min by (instance) (pulse_worker_kafka_up)", "worker {{instance}}", ref="B"),
                ],
                width=12,
                on=("up", "green"),
                off=("down", "red"),
            )
        )
        .with_row(row("Worker"))
        .with_panel(
            series(
                "Events processed and duplicates per second",
                [
                    prom("sum(rate(pulse_worker_events_processed_total[$__rate_interval]))", "processed"),
                    prom("sum(rate(pulse_worker_duplicates_total[$__rate_interval]))", "duplicates", ref="B"),
                ],
                unit="ops",
            )
        )
        .with_panel(
            series(
                "Late events by outcome",
                [prom(by("pulse_worker_late_events_total", "outcome"), "{{outcome}}")],
                unit="ops",
                description="applied: within max lateness (a corrected final row); dropped: stored raw only.",
            )
        )
        .with_panel(
            series(
                "Consumer lag by partition",
                [
                    prom(
                        "sum by (topic, partition) (pulse_worker_consumer_lag_messages)",
                        "{{topic}} [{{partition}}]",
                    )
                ],
            )
        )
        .with_panel(
            series(
                "Stream lag (wall clock minus newest event time)",
                [prom("max by (instance) (pulse_worker_stream_lag_seconds)", "{{instance}}")],
                unit="s",
            )
        )
        .with_panel(
            series(
                "Dead letters by reason",
                [prom(by("pulse_worker_dead_letters_total", "reason"), "{{reason}}")],
                unit="ops",
            )
        )
        .with_panel(
            series(
                "Per-community series cap",
                [
                    prom("sum(pulse_communities)", "communities"),
                    prom("sum(pulse_communities_export_cap)", "cap", ref="B"),
                    prom("sum(pulse_communities_not_exported)", "not exported", ref="C"),
                ],
            )
        )
        .with_row(row("ClickHouse sink"))
        .with_panel(
            series(
                "Rows inserted by table",
                [prom(by("pulse_sink_rows_total", "table"), "{{table}}")],
                unit="rowsps",
            )
        )
        .with_panel(
            series(
                "Batches and failures by table",
                [
                    prom(by("pulse_sink_batches_total", "table"), "batches {{table}}"),
                    prom(by("pulse_sink_failures_total", "table"), "failures {{table}}", ref="B"),
                ],
                unit="ops",
            )
        )
        .with_panel(series("Batch insert time", quantiles("pulse_sink_batch_seconds"), unit="s", width=24))
    )
    return board


DASHBOARDS = {"overview": overview, "community": community, "pipeline": pipeline_health}
