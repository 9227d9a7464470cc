"""The sender against an in-process ASGI gateway stand-in built from the real pure parts.

The stand-in verifies signatures and adapts bodies with the same functions the
gateway uses; it answers with the gateway's status codes and body shapes.
"""

from __future__ import annotations

import json
import socket
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse
from starlette.routing import Route

from pipeline import cli
from pipeline.config import Secret
from pipeline.gateway import signatures
from pipeline.gateway.adapters import Delivery, PayloadError, adapt, adapt_generic
from pipeline.simulate.generate import PLATFORMS, Spec, generate
from pipeline.simulate.model import Request
from pipeline.simulate.render import Credentials, resign_slack
from pipeline.simulate.send import retry_after_s, send

GITHUB, DISCOURSE, SLACK, TOKEN = "g" * 20, "d" * 20, "s" * 20, "t" * 32
CREDS = Credentials(github=GITHUB, discourse=lambda i: DISCOURSE, slack=SLACK, ingest=("tester", TOKEN))
END = datetime(2026, 11, 20, tzinfo=UTC)


def gateway(busy: dict[str, int] | None = None, status: int = 503, retry_after: str = "0") -> Starlette:
    """Answers like the gateway; the first ``busy[path]`` requests per path get ``status``."""
    busy = dict(busy or {})
    seen: Counter[str] = Counter()

    async def webhook(request: HttpRequest) -> JSONResponse:
        platform = request.path_params["platform"]
        seen[platform] += 1
        if seen[platform] <= busy.get(platform, 0):
            return JSONResponse({"error": "busy"}, status, headers={"Retry-After": retry_after})
        body = await request.body()
        headers = dict(request.headers.items())
        try:
            if platform == "github":
                signatures.verify_github(Secret(GITHUB), headers, body)
            elif platform == "discourse":
                signatures.verify_discourse(Secret(DISCOURSE), headers, body)
            else:
                signatures.verify_slack(Secret(SLACK), headers, body, now=time.time())
        except signatures.SignatureError as exc:
            return JSONResponse({"error": "signature check failed", "reason": exc.reason}, 401)
        try:
            adapted = adapt(Delivery(platform, headers, body, datetime.now(UTC)))
        except PayloadError as exc:
            return JSONResponse({"error": "invalid payload", "reason": exc.reason}, 400)
        if adapted.challenge:
            return JSONResponse({"challenge": adapted.challenge}, 200)
        if not adapted.events:
            return JSONResponse({"status": "ignored", "reason": adapted.ignored}, 202)
        return JSONResponse({"status": "accepted", "events": len(adapted.events)}, 202)

    async def events(request: HttpRequest) -> JSONResponse:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return JSONResponse({"error": "unauthorized"}, 401)
        body = await request.body()
        parsed = adapt_generic(body, request.headers["content-type"], "tester", datetime.now(UTC))
        return JSONResponse({"status": "accepted", "events": len(parsed)}, 202)

    return Starlette(routes=[Route("/webhooks/{platform}", webhook, methods=["POST"]),
                             Route("/v1/events", events, methods=["POST"])])  # fmt: skip


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def _requests(platforms: tuple[str, ...] = PLATFORMS, signed_at: float | None = None) -> list[Request]:
    spec = Spec(len(platforms) * 2, ("healthy", "when_we_can"), platforms, 3, END, 5)
    return generate(spec, CREDS, time.time() if signed_at is None else signed_at)


def _send(requests: list[Request], app: Starlette, **options: object) -> tuple[object, Sleeps]:
    sleeps = Sleeps()
    summary = send(requests, "http://gateway.test", transport=httpx.ASGITransport(app=app), sleep=sleeps,
                   progress=None, **options)  # fmt: skip
    return summary, sleeps


def test_everything_simulated_is_accepted_or_ignored() -> None:
    requests = _requests()
    summary, _ = _send(requests, gateway())
    assert summary.ok, summary.format()  # type: ignore[attr-defined]
    assert summary.sent == len(requests)  # type: ignore[attr-defined]
    assert summary.accepted + sum(summary.ignored.values()) == len(requests)  # type: ignore[attr-defined]
    assert summary.ignored["topic_created: the thread start is counted from post_created #1"] > 0  # type: ignore[attr-defined]
    assert "accepted" in summary.format()  # type: ignore[attr-defined]


def test_503_is_retried_after_retry_after() -> None:
    requests = [r for r in _requests(("github",))][:5]
    summary, sleeps = _send(requests, gateway({"github": 3}, 503, "2"), concurrency=1)
    assert summary.ok  # type: ignore[attr-defined]
    assert summary.retries == 3  # type: ignore[attr-defined]
    assert sleeps.calls == [2.0, 2.0, 2.0]
    assert summary.accepted + sum(summary.ignored.values()) == 5  # type: ignore[attr-defined]


def test_429_retry_after_is_capped_and_retries_run_out() -> None:
    requests = _requests(("discourse",))[:2]
    summary, sleeps = _send(requests, gateway({"discourse": 100}, 429, "3600"), concurrency=1, max_retries=2,
                            max_retry_after_s=30.0)  # fmt: skip
    assert sleeps.calls == [30.0] * 4
    assert summary.refused == Counter({"429 busy": 2})  # type: ignore[attr-defined]
    assert not summary.ok  # type: ignore[attr-defined]


def test_other_errors_are_final_and_counted_by_reason() -> None:
    requests = _requests(("github",))[:3]
    wrong = Credentials(github="not-the-secret-at-all")
    bad = generate(Spec(1, ("healthy",), ("github",), 3, END, 5), wrong, time.time())[:2]
    summary, sleeps = _send(requests + bad, gateway())
    assert summary.refused == Counter({"401 signature check failed": 2})  # type: ignore[attr-defined]
    assert sleeps.calls == []


def test_slack_signatures_are_refreshed_before_sending() -> None:
    stale = _requests(("slack",), signed_at=time.time() - 3600)[:4]
    summary, _ = _send(stale, gateway())
    assert summary.refused == Counter({"401 signature check failed": 4})  # type: ignore[attr-defined]
    summary, _ = _send(stale, gateway(), prepare=lambda r: resign_slack(r, SLACK, time.time()))
    assert summary.ok  # type: ignore[attr-defined]


def test_connection_refused_is_retried_then_reported() -> None:
    with socket.socket() as s:  # a free port on 127.0.0.1 that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps = Sleeps()
    summary = send(_requests(("github",))[:1], f"http://127.0.0.1:{port}", sleep=sleeps, progress=None,
                   max_retries=2, timeout_s=2.0)  # fmt: skip
    assert summary.refused == Counter({"connection failed (ConnectError)": 1})
    assert len(sleeps.calls) == 2


@pytest.mark.parametrize(("value", "expected"), [("5", 5.0), (None, 1.5), ("soon", 1.5), ("0", 0.0)])
def test_retry_after_parsing(value: str | None, expected: float) -> None:
    assert retry_after_s(value, 1.5) == expected


def test_pulse_simulate_dry_run_writes_verifiable_requests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "PULSE_GITHUB_WEBHOOK_SECRET": GITHUB,
        "PULSE_DISCOURSE_WEBHOOK_SECRET": DISCOURSE,
        "PULSE_SLACK_SIGNING_SECRET": SLACK,
        "PULSE_INGEST_TOKENS": f"tester={TOKEN}",
        "PULSE_STATE_DIR": str(tmp_path),
    }.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "requests.ndjson"
    code = cli.main(["simulate", "--communities", "4", "--behaviours", "healthy", "--days", "2", "--dry-run", str(out)])
    assert code == 0
    text = out.read_text(encoding="utf-8")
    assert TOKEN not in text  # bearer tokens are secrets: replay adds its own
    lines = [json.loads(line) for line in text.splitlines()]
    assert {line["platform"] for line in lines} == set(PLATFORMS)
    for line in lines:
        headers = {k.lower(): v for k, v in line["headers"].items()}
        body = line["body"].encode()
        if line["platform"] == "github":
            signatures.verify_github(Secret(GITHUB), headers, body)
        elif line["platform"] == "discourse":
            signatures.verify_discourse(Secret(DISCOURSE), headers, body)
        elif line["platform"] == "slack":
            signatures.verify_slack(Secret(SLACK), headers, body, now=time.time())


def test_pulse_simulate_refuses_without_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PULSE_GITHUB_WEBHOOK_SECRET", "PULSE_SLACK_SIGNING_SECRET", "PULSE_INGEST_TOKENS",
                 "PULSE_DISCOURSE_WEBHOOK_SECRET", "PULSE_DISCOURSE_WEBHOOK_SECRETS"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PULSE_STATE_DIR", str(tmp_path))
    assert cli.main(["simulate", "--communities", "2", "--days", "1", "--url", "http://127.0.0.1:9"]) == 2
