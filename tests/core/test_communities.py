"""The community directory file: mappings (renames, groups) and per-community policies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.communities import DirectoryError, load_directory, parse_directory
from pipeline.core.policy import HealthThresholds

DOC = {
    "defaults": {"type": "open", "thresholds": {"dead_after_s": 7 * 86400}},
    "communities": {
        "support": {"type": "team", "thresholds": {"sla_s": 4 * 3600}},
        "plain": {},
    },
    "mappings": [
        {"platform": "discourse", "space_id": "forum.example.com", "raw": "7", "community_id": "support"},
        {"platform": "discourse", "space_id": "forum.example.com", "raw": "8", "community_id": "support"},
        {"platform": "slack", "space_id": "T1", "raw": "*", "community_id": "acme-slack"},
        {"platform": "github", "raw": "octo/repo", "community_id": "octo"},
    ],
}


def test_no_file_means_defaults_and_identity() -> None:
    d = load_directory(None)
    assert d.community_for("github", "octo", "octo/repo") == "octo/repo"
    assert d.policy_for("anything").community_type == "open"
    assert d.policy_for("anything").thresholds == HealthThresholds()


def test_mappings_rename_and_group_most_specific_first(tmp_path: Path) -> None:
    path = tmp_path / "communities.json"
    path.write_text(json.dumps(DOC))
    d = load_directory(path)
    assert d.community_for("discourse", "forum.example.com", "7") == "support"
    assert d.community_for("discourse", "forum.example.com", "8") == "support"  # a group
    assert d.community_for("discourse", "forum.example.com", "9") == "9"
    assert d.community_for("slack", "T1", "C42") == "acme-slack"
    assert d.community_for("slack", "T2", "C42") == "C42"
    assert d.community_for("github", "any-org", "octo/repo") == "octo"


def test_policies_inherit_defaults_and_override_one_by_one() -> None:
    d = parse_directory(DOC)
    support = d.policy_for("support")
    assert support.community_type == "team"
    assert support.thresholds.sla_s == 4 * 3600
    assert support.thresholds.dead_after_s == 7 * 86400  # from defaults
    assert d.policy_for("plain").thresholds.dead_after_s == 7 * 86400
    assert d.policy_for("plain").community_type == "open"
    assert d.policy_for("unknown") == d.default_policy


def test_qualified_naming() -> None:
    d = parse_directory({"naming": "qualified"})
    assert d.community_for("discourse", "f.example", "7") == "discourse:f.example:7"


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ([], "(top)"),
        ({"colour": 1}, "(top)"),
        ({"naming": "odd"}, "naming"),
        ({"defaults": {"type": "club"}}, "defaults.type"),
        ({"communities": {"x": {"thresholds": {"nope": 1}}}}, "communities.x.thresholds"),
        ({"communities": {"x": {"thresholds": {"sla_s": "soon"}}}}, "communities.x.thresholds"),
        ({"communities": {"x": {"thresholds": {"sla_s": -1}}}}, "communities.x.thresholds"),
        ({"mappings": [{"platform": "slack"}]}, "mappings[0].community_id"),
        ({"mappings": [{"platform": "*", "community_id": "a"}]}, "mappings[0].platform"),
        (
            {
                "mappings": [
                    {"platform": "slack", "raw": "C1", "community_id": "a"},
                    {"platform": "slack", "raw": "C1", "community_id": "b"},
                ]
            },
            "mappings[1]",
        ),
    ],
)
def test_invalid_documents_name_the_entry(doc: object, where: str) -> None:
    with pytest.raises(DirectoryError) as info:
        parse_directory(doc)
    assert info.value.where == where


def test_unreadable_or_invalid_file(tmp_path: Path) -> None:
    with pytest.raises(DirectoryError, match="cannot read"):
        load_directory(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DirectoryError, match="not valid JSON"):
        load_directory(bad)
