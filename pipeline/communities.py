"""The community directory: names, groups, types and health thresholds of communities.

One JSON file (``PULSE_COMMUNITIES_FILE``); every key is optional::

    {
      "naming": "raw",
      "defaults": {"type": "open", "thresholds": {"dead_after_s": 1209600}},
      "communities": {
        "support": {"type": "team", "thresholds": {"sla_s": 14400}}
      },
      "mappings": [
        {"platform": "discourse", "space_id": "forum.example.com", "raw": "7",
         "community_id": "support"},
        {"platform": "slack", "space_id": "T0123", "raw": "*", "community_id": "acme-slack"}
      ]
    }

- ``mappings`` rename or group the raw community ids the adapters emit (a
  Discourse category id, a Slack channel id, a GitHub repository). ``space_id``
  and ``raw`` may be ``"*"``; the most specific rule wins: exact, then any raw id
  of that space, then that raw id in any space, then any. Several raw ids mapped
  to one ``community_id`` form a group.
- Without a matching rule the id is the raw id (``"naming": "raw"``, default) or
  ``platform:space_id:raw`` (``"naming": "qualified"``, for when raw ids of
  different spaces could collide).
- ``defaults`` and ``communities`` (keyed by the mapped community id) set the
  type (``open`` or ``team``) and any of the thresholds of
  ``pipeline.core.policy.HealthThresholds`` (durations in seconds, shares in
  [0, 1]); a community's thresholds override the defaults one by one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.policy import DEFAULT_POLICY, CommunityPolicy, HealthThresholds

__all__ = [
    "CommunityPolicy",
    "Directory",
    "DirectoryError",
    "HealthThresholds",
    "load_directory",
    "parse_directory",
]

_TYPES = ("open", "team")
_TOP_KEYS = {"naming", "defaults", "communities", "mappings"}
_POLICY_KEYS = {"type", "thresholds"}
_MAPPING_KEYS = {"platform", "space_id", "raw", "community_id"}


class DirectoryError(ValueError):
    """The directory file is invalid; ``where`` names the offending entry."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"communities file: {where}: {problem}")
        self.where = where
        self.problem = problem


@dataclass(frozen=True)
class Directory:
    naming: str = "raw"
    default_policy: CommunityPolicy = DEFAULT_POLICY
    policies: dict[str, CommunityPolicy] = field(default_factory=dict)
    # (platform, space_id or "*", raw or "*") -> community_id
    mappings: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def community_for(self, platform: str, space_id: str, raw_community_id: str) -> str:
        for key in (
            (platform, space_id, raw_community_id),
            (platform, space_id, "*"),
            (platform, "*", raw_community_id),
            (platform, "*", "*"),
        ):
            mapped = self.mappings.get(key)
            if mapped is not None:
                return mapped
        if self.naming == "qualified":
            return f"{platform}:{space_id}:{raw_community_id}"
        return raw_community_id

    def policy_for(self, community_id: str) -> CommunityPolicy:
        return self.policies.get(community_id, self.default_policy)


def load_directory(path: Path | None) -> Directory:
    """Read the directory file; no file (None) means every default and no mapping."""
    if path is None:
        return Directory()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise DirectoryError(str(path), f"cannot read: {exc.strerror or exc}") from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise DirectoryError(str(path), f"not valid JSON: {exc}") from None
    return parse_directory(doc)


def parse_directory(doc: Any) -> Directory:
    """Validate an already-decoded directory document (pure)."""
    if not isinstance(doc, dict):
        raise DirectoryError("(top)", "must be a JSON object")
    _no_unknown(doc, _TOP_KEYS, "(top)")
    naming = doc.get("naming", "raw")
    if naming not in ("raw", "qualified"):
        raise DirectoryError("naming", f'must be "raw" or "qualified", got {naming!r}')
    default = _policy(doc.get("defaults", {}), DEFAULT_POLICY, "defaults")
    communities = doc.get("communities", {})
    if not isinstance(communities, dict):
        raise DirectoryError("communities", "must be an object keyed by community id")
    policies = {str(cid): _policy(entry, default, f"communities.{cid}") for cid, entry in communities.items()}
    raw_mappings = doc.get("mappings", [])
    if not isinstance(raw_mappings, list):
        raise DirectoryError("mappings", "must be a list")
    mappings: dict[tuple[str, str, str], str] = {}
    for n, m in enumerate(raw_mappings):
        where = f"mappings[{n}]"
        if not isinstance(m, dict):
            raise DirectoryError(where, "must be an object")
        _no_unknown(m, _MAPPING_KEYS, where)
        values = {}
        for key in ("platform", "community_id", "space_id", "raw"):
            value = m.get(key, "*" if key in ("space_id", "raw") else None)
            if not isinstance(value, str) or not value:
                raise DirectoryError(f"{where}.{key}", "must be a non-empty string")
            values[key] = value
        if values["platform"] == "*":
            raise DirectoryError(f"{where}.platform", "must name a platform")
        key3 = (values["platform"], values["space_id"], values["raw"])
        if key3 in mappings and mappings[key3] != values["community_id"]:
            raise DirectoryError(where, "maps the same source as an earlier entry differently")
        mappings[key3] = values["community_id"]
    return Directory(naming=naming, default_policy=default, policies=policies, mappings=mappings)


def _no_unknown(obj: dict[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(obj) - known)
    if unknown:
        raise DirectoryError(where, f"unknown key(s): {', '.join(unknown)}")


def _policy(entry: Any, base: CommunityPolicy, where: str) -> CommunityPolicy:
    if not isinstance(entry, dict):
        raise DirectoryError(where, "must be an object")
    _no_unknown(entry, _POLICY_KEYS, where)
    kind = entry.get("type", base.community_type)
    if kind not in _TYPES:
        raise DirectoryError(f"{where}.type", f'must be "open" or "team", got {kind!r}')
    overrides = entry.get("thresholds", {})
    if not isinstance(overrides, dict):
        raise DirectoryError(f"{where}.thresholds", "must be an object")
    try:
        thresholds = base.thresholds.with_overrides(overrides)
    except ValueError as exc:
        raise DirectoryError(f"{where}.thresholds", str(exc)) from None
    return CommunityPolicy(community_type=kind, thresholds=thresholds)
