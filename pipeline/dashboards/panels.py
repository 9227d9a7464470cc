"""Small helpers over grafana-foundation-sdk: datasources, targets and the panel kinds we use."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from grafana_foundation_sdk.builders import common, prometheus, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm

PROMETHEUS_UID = "pulse-prometheus"
CLICKHOUSE_UID = "pulse-clickhouse"
CLICKHOUSE_PLUGIN = "grafana-clickhouse-datasource"

PROMETHEUS = dm.DataSourceRef(type_val="prometheus", uid=PROMETHEUS_UID)
CLICKHOUSE = dm.DataSourceRef(type_val=CLICKHOUSE_PLUGIN, uid=CLICKHOUSE_UID)

COMMUNITY_DASHBOARD_UID = "pulse-community"


def prom(expr: str, legend: str = "", *, ref: str = "A", instant: bool = False) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(PROMETHEUS)
    if legend:
        query = query.legend_format(legend)
    if instant:
        query = query.instant().format(pm.PromQueryFormat.TABLE)
    return query


@dataclass
class ClickHouseQuery(cogvariants.Dataquery):
    """A target of the official ClickHouse plugin (SQL editor, table format); the SDK has no builder."""

    raw_sql: str
    ref_id: str = "A"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "datasource": {"type": CLICKHOUSE_PLUGIN, "uid": CLICKHOUSE_UID},
            "editorType": "sql",
            "format": 1,  # table
            "queryType": "table",
            "rawSql": self.raw_sql,
            "refId": self.ref_id,
        }


class ClickHouse(cogbuilder.Builder[cogvariants.Dataquery]):
    def __init__(self, sql: str, ref: str = "A") -> None:
        self._query = ClickHouseQuery(" ".join(sql.split()), ref)

    def build(self) -> cogvariants.Dataquery:
        return self._query


Target = prometheus.Dataquery | ClickHouse


def series(
    title: str,
    targets: list[prometheus.Dataquery],
    *,
    unit: str = "short",
    description: str = "",
    width: int = 12,
    height: int = 8,
    stacked: bool = False,
    min_zero: bool = True,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .datasource(PROMETHEUS)
        .targets(list(targets))
        .unit(unit)
        .span(width)
        .height(height)
        .fill_opacity(10)
    )
    if min_zero:
        panel = panel.min(0)
    if description:
        panel = panel.description(description)
    if stacked:
        panel = panel.stacking(common.StackingConfig().mode(cm.StackingMode.NORMAL)).fill_opacity(40)
    return panel


def single(
    title: str,
    target: prometheus.Dataquery,
    *,
    unit: str = "short",
    description: str = "",
    width: int = 6,
    height: int = 4,
    no_value: str = "0",
) -> stat.Panel:
    panel = (
        stat.Panel()
        .title(title)
        .datasource(PROMETHEUS)
        .with_target(target)
        .unit(unit)
        .span(width)
        .height(height)
        .no_value(no_value)
        .graph_mode(cm.BigValueGraphMode.AREA)
    )
    if description:
        panel = panel.description(description)
    return panel


def states(
    title: str,
    targets: list[prometheus.Dataquery],
    *,
    description: str = "",
    width: int = 24,
    height: int = 6,
    on: tuple[str, str] = ("yes", "red"),
    off: tuple[str, str] = ("no", "transparent"),
) -> statetimeline.Panel:
    """A 0/1 series per label value (one-hot gauges), shown as coloured bands."""
    panel = (
        statetimeline.Panel()
        .title(title)
        .datasource(PROMETHEUS)
        .targets(list(targets))
        .span(width)
        .height(height)
        .mappings(
            [
                dm.ValueMap(
                    options={
                        "0": dm.ValueMappingResult(text=off[0], color=off[1]),
                        "1": dm.ValueMappingResult(text=on[0], color=on[1]),
                    },
                )
            ]
        )
    )
    if description:
        panel = panel.description(description)
    return panel


def grid(
    title: str,
    target: Target,
    *,
    source: Literal["prometheus", "clickhouse"] = "prometheus",
    description: str = "",
    width: int = 24,
    height: int = 8,
    hide: tuple[str, ...] = (),
    links: dict[str, str] | None = None,
) -> table.Panel:
    panel = (
        table.Panel()
        .title(title)
        .datasource(PROMETHEUS if source == "prometheus" else CLICKHOUSE)
        .with_target(target)
        .span(width)
        .height(height)
    )
    if description:
        panel = panel.description(description)
    if hide:
        panel = panel.with_transformation(
            dm.DataTransformerConfig(
                id_val="organize", options={"excludeByName": dict.fromkeys(hide, True), "renameByName": {}}
            )
        )
    for column, url in (links or {}).items():
        panel = panel.override_by_name(
            column,
            [dm.DynamicConfigValue(id_val="links", value=[{"title": "Community detail", "url": url}])],
        )
    return panel


def community_link(column: str = "community_id") -> str:
    """URL of the community detail dashboard for the table row's community, keeping the time range."""
    return f"/d/{COMMUNITY_DASHBOARD_UID}?var-community=${{__data.fields.{column}}}&${{__url_time_range}}"


def row(title: str) -> dash.Row:
    return dash.Row(title)
