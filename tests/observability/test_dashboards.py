"""Generated Grafana files: no drift, sane layout, provisioning, alert equivalence, query extraction."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.dashboards.__main__ import main
from pipeline.dashboards.alerting import prometheus_community_rules
from pipeline.dashboards.panels import CLICKHOUSE_PLUGIN, PROMETHEUS_UID
from pipeline.dashboards.queries import dashboard_queries, metric_names_in, substitute
from pipeline.dashboards.render import GRAFANA_DIR, drift, render_all, write
from pipeline.metrics import all_metric_names


def test_committed_files_match_the_generator() -> None:
    assert drift(GRAFANA_DIR) == [], "run `python -m pipeline.dashboards` and commit grafana/"


def test_generation_is_deterministic() -> None:
    assert render_all() == render_all()


def test_check_reports_changed_missing_and_stray_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    assert main(["--out", str(tmp_path), "--check"]) == 0
    (tmp_path / "dashboards" / "overview.json").write_text("{}\n")
    (tmp_path / "provisioning" / "datasources" / "pulse.yaml").unlink()
    (tmp_path / "dashboards" / "old.json").write_text("{}\n")
    assert main(["--out", str(tmp_path), "--check"]) == 1
    err = capsys.readouterr().err
    assert "changed: dashboards/overview.json" in err
    assert "missing: provisioning/datasources/pulse.yaml" in err
    assert "not generated: dashboards/old.json" in err
    assert {p.name for p in write(tmp_path)} == {"overview.json", "pulse.yaml"}


def _load(rel: str) -> Any:
    text = render_all()[rel]
    return json.loads(text) if rel.endswith(".json") else yaml.safe_load(text)


def _boards() -> dict[str, dict[str, Any]]:
    return {rel: _load(rel) for rel in render_all() if rel.startswith("dashboards/")}


def test_layout_and_provisioning() -> None:
    files = set(render_all())
    assert {"dashboards/overview.json", "dashboards/community.json", "dashboards/pipeline.json"} <= files
    provider = _load("provisioning/dashboards/pulse.yaml")["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    sources = {d["uid"]: d for d in _load("provisioning/datasources/pulse.yaml")["datasources"]}
    assert sources[PROMETHEUS_UID]["type"] == "prometheus"
    assert any(d["type"] == CLICKHOUSE_PLUGIN for d in sources.values())
    assert all("password" not in json.dumps(d.get("jsonData", {})) for d in sources.values())
    # every panel and target points at a provisioned datasource
    for board in _boards().values():
        for panel in board["panels"]:
            for ref in [panel.get("datasource"), *(t.get("datasource") for t in panel.get("targets", []))]:
                if ref:
                    assert ref["uid"] in sources, (board["title"], panel["title"], ref)


def test_dashboards_have_unique_uids_and_panels_do_not_overlap() -> None:
    boards = _boards()
    assert len({b["uid"] for b in boards.values()}) == len(boards)
    for board in boards.values():
        taken: set[tuple[int, int]] = set()
        for panel in board["panels"]:
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, panel["title"]
            cells = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
            assert not cells & taken, f"{board['title']}: {panel['title']} overlaps"
            taken |= cells


def test_community_dashboard_is_templated_by_community() -> None:
    board = _load("dashboards/community.json")
    assert [v["name"] for v in board["templating"]["list"]] == ["community"]
    for where, expr in dashboard_queries(board):
        if "variable" not in where:
            assert "$community" in expr, where
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            if "rawSql" in target:
                assert "'${community}'" in target["rawSql"], panel["title"]


def test_overview_shows_states_flagged_list_and_trends() -> None:
    exprs = [e for _, e in dashboard_queries(_load("dashboards/overview.json"))]
    assert any("sum by (state) (pulse_communities)" in e for e in exprs)
    assert any("pulse_community_flag == 1" in e for e in exprs)
    assert any("pulse_community_posts" in e for e in exprs)
    assert any("pulse_community_first_response_p50_seconds" in e for e in exprs)


def test_dashboard_queries_name_only_exported_metrics() -> None:
    known = all_metric_names()
    count = 0
    for board in _boards().values():
        for where, expr in dashboard_queries(board):
            names = metric_names_in(substitute(expr))
            assert names, f"{where}: no metric in {expr!r}"
            assert names <= known, f"{where}: unknown {names - known}"
            count += 1
    assert count > 30


def test_grafana_alerts_are_equivalent_to_prometheus_community_rules() -> None:
    grafana = {r["title"]: r for r in _load("provisioning/alerting/community.yaml")["groups"][0]["rules"]}
    prometheus = {r["alert"]: r for r in prometheus_community_rules()}
    assert set(grafana) == set(prometheus)
    for name, rule in prometheus.items():
        g = grafana[name]
        query = next(q for q in g["data"] if q["datasourceUid"] == PROMETHEUS_UID)
        assert query["model"]["expr"] == " ".join(rule["expr"].split())
        assert g["for"] == rule["for"]
        assert g["labels"] == rule["labels"]
        assert g["condition"] == "C" and g["noDataState"] == "OK"
        for key, text in rule["annotations"].items():
            assert g["annotations"][key] == re.sub(r"\$value\b", "$values.B.Value", text)
    assert len({r["uid"] for r in grafana.values()}) == len(grafana)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (le) (rate(pulse_sink_batch_seconds_bucket{table="x"}[5m]))', {"pulse_sink_batch_seconds_bucket"}),
        ("a and on (community_id) b == 1", {"a", "b"}),
        ("time() - max(x offset 5m) * 1e3", {"x"}),
        ('absent({__name__="pulse_x"})', {"pulse_x"}),
        ('topk(5, m{range="7d"}) > bool 2', {"m"}),
    ],
)
def test_metric_names_in(expr: str, names: set[str]) -> None:
    assert metric_names_in(expr) == names


def test_dashboards_load_back_into_the_sdk_model() -> None:
    from grafana_foundation_sdk.models.dashboard import Dashboard

    for rel, board in _boards().items():
        model = Dashboard.from_json(board)
        assert model.uid == board["uid"] and model.panels, rel
