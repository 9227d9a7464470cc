"""Grafana-managed alert rules equivalent to the Prometheus community alerts.

They are derived from deploy/prometheus/rules/community.yml, not written twice: each Grafana
rule runs the Prometheus rule's expression (instant query A), takes its last value per series
(B) and fires when B > 0 (C), with the same for-duration, labels and annotations. The
expressions only return series that satisfy the rule, so "no data" means "nothing to alert"
(noDataState OK); a failing query is reported as an error, not as a firing alert.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from grafana_foundation_sdk.builders import alerting, expr
from grafana_foundation_sdk.models import alerting as am

from pipeline.dashboards.panels import PROMETHEUS_UID, prom

COMMUNITY_RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules" / "community.yml"
FOLDER = "Community Pulse"
GROUP = "pulse-community"
EXPRESSION_UID = "__expr__"  # Grafana's server-side expressions


def _uid(alert: str) -> str:
    # PulseCommunityOnePoster -> pulse-community-one-poster (Grafana uids: at most 40 characters)
    return re.sub(r"(?<!^)(?=[A-Z])", "-", alert).lower()[:40]


def _grafana_template(text: str) -> str:
    # Prometheus' $value is the query result; in Grafana it is the reduced value B.
    return re.sub(r"\$value\b", "$values.B.Value", text)


def grafana_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """One Prometheus alerting rule as a Grafana file-provisioned rule."""
    query = (
        alerting.Query("A")
        .datasource_uid(PROMETHEUS_UID)
        .relative_time_range(am.RelativeTimeRange(from_val=600, to=0))
        .model(prom(" ".join(rule["expr"].split()), instant=False).instant())
    )
    reduce = (
        alerting.Query("B")
        .datasource_uid(EXPRESSION_UID)
        .model(
            expr.TypeReduce()
            .ref_id("B")
            .expression("A")
            .reducer("last")
            .settings(expr.ExprTypeReduceSettings().mode("dropNN"))
        )
    )
    threshold = (
        alerting.Query("C")
        .datasource_uid(EXPRESSION_UID)
        .model(
            expr.TypeThreshold()
            .ref_id("C")
            .expression("B")
            .conditions(
                [
                    expr.ExprTypeThresholdConditions().evaluator(
                        expr.ExprTypeThresholdConditionsEvaluator().type("gt").params([0])
                    )
                ]
            )
        )
    )
    built = (
        alerting.Rule(rule["alert"])
        .uid(_uid(rule["alert"]))
        .condition("C")
        .queries([query, reduce, threshold])
        .for_val(rule.get("for", "0s"))
        .no_data_state("OK")
        .exec_err_state("Error")
        .labels(dict(rule.get("labels", {})))
        .annotations({k: _grafana_template(v) for k, v in rule.get("annotations", {}).items()})
        .is_paused(False)
        .build()
    )
    api: dict[str, Any] = _plain(built)
    # The SDK models the HTTP API; file provisioning wants these keys only.
    keep = (
        "uid",
        "title",
        "condition",
        "data",
        "noDataState",
        "execErrState",
        "for",
        "annotations",
        "labels",
        "isPaused",
    )
    return {k: api[k] for k in keep if k in api}


def _plain(value: Any) -> Any:
    """SDK objects -> plain dicts/lists, for YAML."""
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        return _plain(to_json())
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def prometheus_community_rules(path: Path = COMMUNITY_RULES) -> list[dict[str, Any]]:
    doc = yaml.safe_load(path.read_text())
    return [r for group in doc["groups"] for r in group["rules"] if "alert" in r]


def alert_provisioning(path: Path = COMMUNITY_RULES) -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "groups": [
            {
                "orgId": 1,
                "name": GROUP,
                "folder": FOLDER,
                "interval": "1m",
                "rules": [grafana_rule(r) for r in prometheus_community_rules(path)],
            }
        ],
    }
