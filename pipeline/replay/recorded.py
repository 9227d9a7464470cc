"""Recorded deliveries, and how to turn them into signed requests again (pure, no I/O).

Three inputs are understood (``read_path`` picks by what it finds):

- the fixture layout: ``<platform>/<event>__N.json`` files (or a folder of them), one
  JSON body each. The file name gives the event header GitHub and Discourse need
  (``X-GitHub-Event`` / ``X-Discourse-Event``); the body is sent compact, as the
  platforms do.
- NDJSON of recorded requests, one per line: ``{"platform": ..., "headers": {...},
  "body": "<text>"}`` (or ``"body_b64"`` for bytes that are not UTF-8), as written
  by ``pulse simulate --dry-run`` or read back from ``webhooks.raw``.
- NDJSON of canonical events (lines with ``event_id`` and ``kind``): sent to
  ``/v1/events`` in chunks.

Signing drops whatever signature a recording carries and signs again with the
configured secrets, at ``now`` (Slack's signature includes a timestamp).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import Settings
from pipeline.gateway import signatures
from pipeline.gateway.producer import H_PLATFORM, is_secret_header

PLATFORMS = ("github", "discourse", "slack")
DEFAULT_DISCOURSE_INSTANCE = "http://forum.example"
GENERIC = "generic"


class RecordingError(ValueError):
    """A file or line that is not a recording we understand; names where."""


@dataclass(frozen=True)
class Recorded:
    """One request to send: a webhook delivery, or a chunk of canonical events (platform generic)."""

    platform: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    source: str = ""  # where it came from, for error messages
    events: int = 0  # canonical events in a generic chunk


def _compact(body: bytes) -> bytes:
    return json.dumps(json.loads(body), separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def from_fixture(platform: str, name: str, body: bytes, instance: str = DEFAULT_DISCOURSE_INSTANCE) -> Recorded:
    """A fixture file's delivery: ``name`` is its stem, ``<event>__N``."""
    event = name.split("__", 1)[0]
    try:
        compact = _compact(body)
    except ValueError as exc:
        raise RecordingError(f"{platform}/{name}: not JSON ({exc})") from None
    headers = {"content-type": "application/json"}
    if platform == "github":
        headers |= {"x-github-event": event, "x-github-delivery": f"replay-{name}"}
    elif platform == "discourse":
        data = json.loads(compact)
        group = next(iter(data), event) if isinstance(data, dict) and len(data) == 1 else event
        headers |= {
            "x-discourse-instance": instance,
            "x-discourse-event": event,
            "x-discourse-event-type": group,
            "x-discourse-event-id": "1",
        }
    elif platform != "slack":
        raise RecordingError(f"{name}: unknown platform {platform!r} (expected one of {', '.join(PLATFORMS)})")
    return Recorded(platform, compact, headers, source=f"{platform}/{name}")


def from_request_line(line: str, where: str) -> Recorded:
    """One NDJSON recorded request ``{platform, headers, body | body_b64}``."""
    try:
        data = json.loads(line)
    except ValueError:
        raise RecordingError(f"{where}: not JSON") from None
    if not isinstance(data, dict):
        raise RecordingError(f"{where}: expected an object")
    platform = data.get("platform")
    if platform not in (*PLATFORMS, GENERIC):
        raise RecordingError(
            f"{where}: platform must be one of {', '.join((*PLATFORMS, GENERIC))}, got {platform!r}"
        )
    headers = data.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise RecordingError(f"{where}: headers must be an object of strings")
    if isinstance(data.get("body"), str):
        body = data["body"].encode("utf-8")
    elif isinstance(data.get("body_b64"), str):
        try:
            body = base64.b64decode(data["body_b64"], validate=True)
        except (binascii.Error, ValueError):
            raise RecordingError(f"{where}: body_b64 is not base64") from None
    elif isinstance(data.get("body"), dict | list):
        body = json.dumps(data["body"], separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    else:
        raise RecordingError(f"{where}: needs a body (text) or body_b64")
    return Recorded(platform, body, {k.lower(): v for k, v in headers.items()}, source=where)


def from_raw_record(headers: Iterable[tuple[str, bytes]], body: bytes, where: str) -> Recorded | None:
    """A ``webhooks.raw`` record (Kafka headers + value); None for generic ones (not re-signable)."""
    decoded = {k: v.decode("utf-8", "replace") for k, v in headers}
    platform = decoded.get(H_PLATFORM)
    if platform not in PLATFORMS:
        return None
    kept = {k: v for k, v in decoded.items() if not k.startswith("pulse-")}
    return Recorded(platform, body, kept, source=where)


def is_event_line(data: object) -> bool:
    return isinstance(data, dict) and "event_id" in data and "kind" in data


def event_chunks(lines: Iterable[tuple[int, str]], chunk: int, where: str) -> Iterator[Recorded]:
    """Canonical-event NDJSON lines (number, text) -> NDJSON chunks of at most ``chunk`` events."""
    batch: list[str] = []
    first = 0
    for number, line in lines:
        if not batch:
            first = number
        batch.append(line.strip())
        if len(batch) >= chunk:
            yield _chunk(batch, f"{where}:{first}-{number}")
            batch = []
    if batch:
        yield _chunk(batch, f"{where}:{first}-")


def _chunk(lines: list[str], source: str) -> Recorded:
    body = ("\n".join(lines) + "\n").encode("utf-8")
    return Recorded(GENERIC, body, {"content-type": "application/x-ndjson"}, source=source, events=len(lines))


def read_ndjson(text: str, where: str, chunk: int = 500) -> Iterator[Recorded]:
    """An NDJSON file of recorded requests or of canonical events (decided by its first line)."""
    numbered = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not numbered:
        return
    try:
        first = json.loads(numbered[0][1])
    except ValueError:
        raise RecordingError(f"{where}:{numbered[0][0]}: not JSON") from None
    if is_event_line(first):
        yield from event_chunks(numbered, chunk, where)
        return
    for number, line in numbered:
        yield from_request_line(line, f"{where}:{number}")


def read_path(path: Path, chunk: int = 500, instance: str = DEFAULT_DISCOURSE_INSTANCE) -> Iterator[Recorded]:
    """Everything to send from a file or folder (see the module docstring). Reads files lazily."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in (".json", ".ndjson", ".jsonl"))
        if not files:
            raise RecordingError(f"{path}: no .json, .ndjson or .jsonl files")
        for file in files:
            yield from read_path(file, chunk, instance)
        return
    if path.suffix in (".ndjson", ".jsonl"):
        yield from read_ndjson(path.read_text(encoding="utf-8"), str(path), chunk)
        return
    platform = path.parent.name
    if platform not in PLATFORMS:
        raise RecordingError(
            f"{path}: a .json fixture must sit in a folder named after its platform ({', '.join(PLATFORMS)})"
        )
    yield from_fixture(platform, path.stem, path.read_bytes(), instance)


# ---------------------------------------------------------------- signing


def route(recorded: Recorded) -> str:
    return "/v1/events" if recorded.platform == GENERIC else f"/webhooks/{recorded.platform}"


def signed_headers(recorded: Recorded, settings: Settings, now: float, sender: str | None = None) -> dict[str, str]:
    """Headers to send: the recording's (signatures dropped) plus a fresh signature or token.

    Raises ``RecordingError`` when the secret needed is not configured.
    """
    headers = {
        k: v for k, v in recorded.headers.items()
        if not is_secret_header(k) and k not in ("content-length", "host", "connection", "transfer-encoding")
    }
    headers.setdefault("content-type", "application/json")
    if recorded.platform == GENERIC:
        tokens = settings.ingest_tokens
        if not tokens:
            raise RecordingError("PULSE_INGEST_TOKENS is not set: cannot send canonical events")
        name = sender if sender is not None else next(iter(tokens))
        if name not in tokens:
            raise RecordingError(f"no ingest token for sender {name!r}")
        headers["authorization"] = f"Bearer {tokens[name].reveal()}"
        return headers
    if recorded.platform == "github":
        secret = settings.github_webhook_secret
        sign = signatures.sign_github
    elif recorded.platform == "discourse":
        secret = settings.discourse_secret_for(headers.get("x-discourse-instance", ""))
        sign = signatures.sign_discourse
    else:
        secret = settings.slack_signing_secret
        if secret is None:
            raise RecordingError("PULSE_SLACK_SIGNING_SECRET is not set: cannot sign Slack deliveries")
        extra = signatures.sign_slack(secret.reveal(), recorded.body, int(now))
        return headers | {k.lower(): v for k, v in extra.items()}
    if secret is None:
        raise RecordingError(f"no {recorded.platform} webhook secret configured: cannot sign")
    return headers | {k.lower(): v for k, v in sign(secret.reveal(), recorded.body).items()}
