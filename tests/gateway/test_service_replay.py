"""`pulse replay` against the live gateway and broker; community mapping on the way in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from pipeline import topics
from pipeline.config import Settings
from pipeline.events import CanonicalEvent
from pipeline.replay.recorded import read_path
from tests.gateway.test_service_gateway import FIXTURES, consume, expected_events, serve, wait_ready

pytestmark = pytest.mark.kafka


def _env(settings: Settings, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env |= {
        "PULSE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "PULSE_TOPIC_PREFIX": settings.topic_prefix,
        "PULSE_STATE_DIR": str(settings.state_dir),
        "PULSE_GITHUB_WEBHOOK_SECRET": settings.github_webhook_secret.reveal(),  # type: ignore[union-attr]
        "PULSE_DISCOURSE_WEBHOOK_SECRET": settings.discourse_webhook_secret.reveal(),  # type: ignore[union-attr]
        "PULSE_SLACK_SIGNING_SECRET": settings.slack_signing_secret.reveal(),  # type: ignore[union-attr]
        "PULSE_INGEST_TOKENS": "tester=" + settings.ingest_tokens["tester"].reveal(),
    }
    return env | overrides


def replay(path: Path, url: str, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "replay", str(path), "--url", url, *extra],
        env=env, capture_output=True, text=True, timeout=120,
    )


def test_replay_of_fixtures_recorded_requests_and_events(pulse_settings: Settings, tmp_path: Path) -> None:
    settings = pulse_settings
    # recorded requests as `pulse simulate --dry-run` writes them, signatures stale
    github = [r for r in read_path(FIXTURES / "github") if expected_events(r)]
    requests = tmp_path / "requests.ndjson"
    requests.write_text("\n".join(
        json.dumps({"platform": r.platform, "path": "/webhooks/github",
                    "headers": {**r.headers, "X-Hub-Signature-256": "sha256=" + "0" * 64},
                    "body": r.body.decode()})
        for r in github
    ) + "\n")
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    events = tmp_path / "events.ndjson"
    events.write_text("".join(
        json.dumps({"event_id": f"replayed-{i}", "space_id": "s", "community_id": f"c{i % 2}",
                    "kind": "reply", "actor_id": "a", "occurred_at": now}) + "\n"
        for i in range(7)
    ))
    slack = FIXTURES / "slack"
    expected_slack = [e for r in read_path(slack) for e in expected_events(r)]

    with serve(settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_ready(client)
        env = _env(settings)
        done_requests = replay(requests, url, env, "--quiet")
        done_events = replay(events, url, env, "--chunk", "3")
        done_slack = replay(slack, url, env, "--quiet")

    assert done_requests.returncode == 0, done_requests.stderr + done_requests.stdout
    assert f"accepted {len(github)} " in done_requests.stdout
    assert done_events.returncode == 0, done_events.stderr
    assert "sent 3 requests" in done_events.stdout and "accepted 3 (7 events)" in done_events.stdout
    assert "pulse: sent 3/3" in done_events.stderr  # progress
    assert done_slack.returncode == 0, done_slack.stderr
    assert "challenges answered 1" in done_slack.stdout

    landed = consume(settings.kafka_bootstrap, settings.topic(topics.EVENTS),
                     sum(len(expected_events(r)) for r in github) + 7 + len(expected_slack))
    ids = [CanonicalEvent.from_json_bytes(r.value).event_id for r in landed]
    assert {f"replayed-{i}" for i in range(7)} <= set(ids)
    assert {e.event_id for r in github for e in expected_events(r)} <= set(ids)
    assert {e.event_id for e in expected_slack} <= set(ids)


def test_replay_reports_refusals_and_exits_1(pulse_settings: Settings) -> None:
    with serve(pulse_settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_ready(client)
        env = _env(pulse_settings, PULSE_GITHUB_WEBHOOK_SECRET="the-wrong-secret-012345")
        done = replay(FIXTURES / "github", url, env, "--quiet")
    assert done.returncode == 1
    count = len(list((FIXTURES / "github").glob("*.json")))
    assert f"{count:6d}  401 signature check failed" in done.stdout
    assert "the-wrong-secret" not in done.stdout + done.stderr


def test_community_directory_renames_on_the_way_in(pulse_settings: Settings, tmp_path: Path) -> None:
    recorded = next(r for r in read_path(FIXTURES / "github") if expected_events(r))
    raw_community = expected_events(recorded)[0].community_id
    directory = tmp_path / "communities.json"
    directory.write_text(json.dumps({"mappings": [
        {"platform": "github", "space_id": "*", "raw": raw_community, "community_id": "renamed-community"}
    ]}))
    settings = replace(pulse_settings, communities_file=directory)
    with serve(settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_ready(client)
        done = replay(FIXTURES / "github" / (recorded.source.split("/")[1] + ".json"), url,
                      _env(settings), "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr
    landed = consume(settings.kafka_bootstrap, settings.topic(topics.EVENTS), len(expected_events(recorded)))
    assert landed and all(r.key == b"renamed-community" for r in landed)
    assert all(CanonicalEvent.from_json_bytes(r.value).community_id == "renamed-community" for r in landed)
