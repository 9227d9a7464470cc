"""A new community's 35-day history, sent through the real gateway in time order, ends
with the same final windows and health as if it had arrived live.

"Live" is the pure engine fed each event at its own time, with a tick just before it
(the wall clock then *is* event time, so idle stretches advance stream time as they
would in production). "Imported" is the whole history sent at once through
`pulse gateway` (signed Slack and GitHub deliveries) into `pulse worker`.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline import config, topics
from pipeline.core.engine import CommunityEngine
from pipeline.events import CanonicalEvent
from pipeline.gateway.adapters import Delivery, adapt, adapt_generic
from pipeline.simulate.generate import Spec, generate
from pipeline.simulate.model import Request
from pipeline.simulate.render import Credentials
from pipeline.simulate.send import send
from pipeline.stack.process import free_port, terminate
from tests.worker.conftest import WorkerProcess, read_topic
from tests.worker.test_worker_kafka import _assert_same, _final_rows

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture
def gateway(worker_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log_file = tmp_path / "gateway.log"
    with open(log_file, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "gateway"],
            env={**worker_env, "PULSE_GATEWAY_PORT": str(port)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, log_file.read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            time.sleep(0.3)
        yield url
    finally:
        terminate(process.pid, 20.0, process)


def _events_of(request: Request, received_at: datetime) -> list[CanonicalEvent]:
    if request.platform == "generic":
        return adapt_generic(request.body, "application/x-ndjson", "tester", received_at)
    headers = {k.lower(): v for k, v in request.headers.items()}
    return list(adapt(Delivery(request.platform, headers, request.body, received_at)).events)


def _live(events: list[CanonicalEvent]) -> tuple[dict[Any, Any], dict[str, Any]]:
    engine = CommunityEngine(events[0].community_id, events[0].platform, events[0].space_id)
    rows = []
    for event in sorted(events, key=lambda e: e.occurred_at):
        at = event.occurred_ms
        rows += [json.loads(w.to_json_bytes()) for w in engine.advance(at).windows]
        rows += [json.loads(w.to_json_bytes()) for w in engine.apply(event, at + 500).windows]
    return _final_rows(rows), json.loads(engine.health().to_json_bytes())


@pytest.mark.parametrize(("platform", "behaviour"), [("slack", "when_we_can"), ("github", "one_poster")])
def test_imported_history_equals_live(
    platform: str,
    behaviour: str,
    start_worker: Callable[..., WorkerProcess],
    gateway: str,
    worker_env: dict[str, str],
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    settings = config.load({k: v for k, v in worker_env.items() if k.startswith("PULSE_")})
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    spec = Spec(communities=1, behaviours=(behaviour,), platforms=(platform,), days=35, end=end, seed=7)
    requests = generate(spec, Credentials.from_settings(settings), signed_at=time.time())
    now = datetime.now(UTC)
    events = [e for r in requests for e in _events_of(r, now)]
    assert len({e.community_id for e in events}) == 1 and len(events) > 30
    expected_windows, expected_health = _live(events)
    assert len(expected_windows) > 35  # at least every day of the 35 is final

    worker = start_worker()
    worker.wait_ready()
    summary = send(requests, gateway, concurrency=1, progress=None)  # one at a time: strict time order
    assert not summary.refused, summary.format()

    deadline = time.monotonic() + 180
    got: dict[Any, Any] = {}
    while time.monotonic() < deadline:
        got = _final_rows(read_topic(kafka_bootstrap, topic_prefix + topics.WINDOWS, idle_s=2.0))
        if got == expected_windows:
            break
        time.sleep(2)
    _assert_same(got, expected_windows)

    health = read_topic(kafka_bootstrap, topic_prefix + topics.HEALTH, idle_s=2.0)
    latest = max(health, key=lambda h: int(h["version"]))  # type: ignore[call-overload]
    # the figures are the windows, compared above; health is the judgement made of them
    for field in ("state", "flags", "responsiveness"):
        assert latest[field] == expected_health[field], field
