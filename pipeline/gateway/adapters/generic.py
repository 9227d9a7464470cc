"""The generic API (``POST /v1/events``): canonical events sent by in-house platforms.

The body is a JSON array of canonical events (a single object is accepted too)
with ``Content-Type: application/json``, or NDJSON (one event per line) with
``application/x-ndjson``. Each item is validated as a ``CanonicalEvent``; the
gateway stamps ``received_at`` (a sent value is replaced). ``platform`` may be left
out: it then defaults to the sender's name (the one its bearer token belongs to).
At most ``MAX_ITEMS`` events per request. Errors name the item index and field:
``items[3].occurred_at``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from pipeline.events import CanonicalEvent

from ._base import PayloadError, type_name

MAX_ITEMS = 10_000
JSON_TYPES = frozenset({"application/json"})
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"})
CONTENT_TYPES = JSON_TYPES | NDJSON_TYPES


class UnsupportedMediaType(PayloadError):
    """The content type is neither JSON nor NDJSON (the gateway may answer 415)."""


def _parse(text: str | bytes, where: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise PayloadError(where, "JSON nested too deeply") from None
    except ValueError as exc:
        raise PayloadError(where, f"not valid JSON ({type(exc).__name__})") from None


def _items(body: bytes, media_type: str) -> list[Any]:
    if media_type in JSON_TYPES:
        value = _parse(body, "body")
        if isinstance(value, dict):
            return [value]
        if not isinstance(value, list):
            raise PayloadError("body", f"must be a JSON array of events, got {type_name(value)}")
        if len(value) > MAX_ITEMS:
            raise PayloadError("body", f"too many events: at most {MAX_ITEMS} per request")
        return value
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError("body", "NDJSON must be UTF-8") from None
    lines = [line for line in text.split("\n") if line.strip()]
    if len(lines) > MAX_ITEMS:
        raise PayloadError("body", f"too many events: at most {MAX_ITEMS} per request")
    return [_parse(line, f"items[{i}]") for i, line in enumerate(lines)]


def adapt_generic(body: bytes, content_type: str, sender: str, received_at: datetime) -> list[CanonicalEvent]:
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type not in CONTENT_TYPES:
        raise UnsupportedMediaType("Content-Type", "must be application/json (an array) or application/x-ndjson")
    events: list[CanonicalEvent] = []
    for i, item in enumerate(_items(body, media_type)):
        if not isinstance(item, dict):
            raise PayloadError(f"items[{i}]", f"must be an object, got {type_name(item)}")
        fields = dict(item)
        fields.setdefault("platform", sender)
        fields["received_at"] = received_at
        try:
            events.append(CanonicalEvent.model_validate(fields))
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first.get("loc", ()))
            where = f"items[{i}].{loc}" if loc else f"items[{i}]"
            raise PayloadError(where, str(first.get("msg", "invalid value"))) from None
        except (RecursionError, OverflowError):
            raise PayloadError(f"items[{i}]", "value out of range") from None
    return events
