"""The live gateway against its own OpenAPI document, and against signed garbage.

* schemathesis (its CLI, as a subprocess with a bounded number of examples) tests
  every operation of /openapi.json on the running service: each answer must be a
  documented status with a documented body and content type, so any 5xx other than
  the documented 503 fails.
* The webhook routes only answer 401 to schemathesis, which cannot sign. A hypothesis
  test therefore sends correctly signed bodies of arbitrary shape (random JSON and
  fixtures with fields removed or retyped): each must get 202 or 400 with an error
  naming the problem, never a 5xx.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config import Settings
from pipeline.replay.recorded import Recorded, read_path, route, signed_headers
from tests.gateway.test_service_gateway import FIXTURES, serve, wait_ready

pytestmark = pytest.mark.kafka


def test_schemathesis_finds_no_undocumented_answer(pulse_settings: Settings, tmp_path: Path) -> None:
    token = pulse_settings.ingest_tokens["tester"].reveal()
    with serve(pulse_settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_ready(client)
        result = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"), "run", f"{url}/openapi.json",
                "--checks", "status_code_conformance,content_type_conformance,"
                "response_headers_conformance,response_schema_conformance",
                "--max-examples", "20", "--workers", "1",
                "--header", f"Authorization: Bearer {token}",
                "--generation-database", "none", "--seed", "1",
                "--no-color", "--report", "junit", "--report-dir", str(tmp_path),
            ],
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
            env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"},
        )
        metrics_text = client.get("/metrics").text
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "7 selected" in result.stdout  # every operation was loaded and tested
    # the generated requests really reached the gateway, including the authenticated generic API
    received = [line for line in metrics_text.splitlines()
                if line.startswith('pulse_gateway_deliveries_received_total{platform="generic"}')]
    assert received and float(received[0].rsplit(" ", 1)[1]) > 0


# ---------------------------------------------------------------- signed garbage

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value[:3]):
            out += _paths(item, (*prefix, index))
    return out


@st.composite
def mutated_fixtures(draw: st.DrawFn, fixtures: list[Recorded]) -> Recorded:
    """A real delivery with one field removed or given a value of another type."""
    recorded = draw(st.sampled_from(fixtures))
    data = json.loads(recorded.body)
    paths = _paths(data)
    if paths:
        path = draw(st.sampled_from(paths))
        parent = data
        for step in path[:-1]:
            parent = parent[step]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
    body = json.dumps(data, separators=(",", ":")).encode()
    return Recorded(recorded.platform, body, dict(recorded.headers), source=recorded.source)


@pytest.fixture
def live_gateway(pulse_settings: Settings) -> Any:
    with serve(pulse_settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_ready(client)
        yield client


FIXTURE_DELIVERIES = [r for p in ("github", "discourse", "slack") for r in read_path(FIXTURES / p)]


def _check_answer(response: httpx.Response) -> None:
    assert response.status_code in (200, 202, 400), response.text
    body = response.json()
    if response.status_code == 400:
        assert set(body) == {"error", "field", "reason"} and body["reason"]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(recorded=mutated_fixtures(FIXTURE_DELIVERIES))
def test_signed_mutated_deliveries_get_202_or_400(
    live_gateway: httpx.Client, pulse_settings: Settings, recorded: Recorded
) -> None:
    headers = signed_headers(recorded, pulse_settings, time.time())
    _check_answer(live_gateway.post(route(recorded), content=recorded.body, headers=headers))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    template=st.sampled_from(FIXTURE_DELIVERIES),
    body=json_values.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=200),
)
def test_signed_arbitrary_bodies_get_202_or_400(
    live_gateway: httpx.Client, pulse_settings: Settings, template: Recorded, body: bytes
) -> None:
    recorded = Recorded(template.platform, body, copy.deepcopy(dict(template.headers)))
    headers = signed_headers(recorded, pulse_settings, time.time())
    _check_answer(live_gateway.post(route(recorded), content=body, headers=headers))
