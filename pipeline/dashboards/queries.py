"""Find every PromQL expression in dashboards, rule files and Grafana alert files (pure).

Used by the tests that run each expression on a real Prometheus and check that it names
only metrics the services export. Grafana variables are replaced by concrete values first.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from pipeline.dashboards.panels import PROMETHEUS_UID

# Grafana's built-in variables and ours, with values Prometheus accepts.
SUBSTITUTIONS: Mapping[str, str] = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "${community}": "example",
    "$community": "example",
}

_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"inf", "nan", "Inf", "NaN", "atan2"}
)


def substitute(expr: str) -> str:
    for var, value in SUBSTITUTIONS.items():
        expr = expr.replace(var, value)
    return expr


def metric_names_in(expr: str) -> set[str]:
    """Metric names an expression selects (identifiers that are not functions or keywords)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or match.group() in _KEYWORDS:
            continue  # a function or aggregation, or an operator word
        names.add(match.group())
    # a bare {__name__="x"} selector
    names.update(re.findall(r'__name__\s*=\s*"([^"]+)"', expr))
    return names


def _variable_expr(query: Any) -> str | None:
    text = query.get("query") if isinstance(query, dict) else query
    if not isinstance(text, str):
        return None
    text = text.strip()
    if match := re.fullmatch(r"label_values\((.+),\s*\w+\)", text):
        return match.group(1)  # label_values(selector, label)
    if match := re.fullmatch(r"query_result\((.+)\)", text):
        return match.group(1)
    return None  # label_values(label), metrics(...): nothing to check


def dashboard_queries(board: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, expr) for every Prometheus target and query variable of a dashboard JSON."""
    title = board.get("title", board.get("uid", "?"))
    for var in board.get("templating", {}).get("list", []):
        if var.get("type") == "query" and (var.get("datasource") or {}).get("type") == "prometheus":
            expr = _variable_expr(var.get("query"))
            if expr:
                yield f"{title} / variable {var['name']}", expr
    panels = list(board.get("panels", []))
    while panels:
        panel = panels.pop(0)
        panels.extend(panel.get("panels", []))  # collapsed rows
        panel_ds = (panel.get("datasource") or {}).get("type")
        for target in panel.get("targets", []):
            ds = (target.get("datasource") or {}).get("type", panel_ds)
            if ds == "prometheus" and target.get("expr"):
                yield f"{title} / {panel.get('title')} / {target.get('refId')}", target["expr"]


def rule_queries(rules: Mapping[str, Any], source: str) -> Iterator[tuple[str, str]]:
    for group in rules.get("groups", []):
        for rule in group.get("rules", []):
            yield f"{source} / {rule.get('alert') or rule.get('record')}", rule["expr"]


def grafana_alert_queries(provisioning: Mapping[str, Any], source: str) -> Iterator[tuple[str, str]]:
    for group in provisioning.get("groups", []):
        for rule in group.get("rules", []):
            for query in rule.get("data", []):
                if query.get("datasourceUid") == PROMETHEUS_UID:
                    yield f"{source} / {rule['title']} / {query['refId']}", query["model"]["expr"]


def shipped_queries() -> list[tuple[str, str]]:
    """(where, expr) of every PromQL expression we ship, Grafana variables substituted:
    generated dashboards and Grafana alerts, and the Prometheus rule files."""
    import json
    from pathlib import Path

    import yaml

    from pipeline.dashboards.render import render_all

    found: list[tuple[str, str]] = []
    for rel, text in render_all().items():
        if rel.startswith("dashboards/"):
            found += dashboard_queries(json.loads(text))
        elif rel.startswith("provisioning/alerting/"):
            found += grafana_alert_queries(yaml.safe_load(text), rel)
    rules = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules"
    for path in sorted(rules.glob("*.yml")):
        found += rule_queries(yaml.safe_load(path.read_text()), path.name)
    return [(where, substitute(expr)) for where, expr in found]
