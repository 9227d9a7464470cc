"""Shared shapes of the adapters and small field readers that only raise PayloadError.

Every reader takes a dotted ``path`` used in the error, so a 400 answer says
exactly which field of the body was wrong (``post.created_at``, ``event.ts``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs

from pydantic import ValidationError

from pipeline.events import CanonicalEvent


class PayloadError(ValueError):
    """The body is not a payload we can read; the gateway answers 400 with field and reason."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Delivery:
    platform: str
    headers: Mapping[str, str]  # keys lower-case
    body: bytes
    received_at: datetime  # UTC


@dataclass(frozen=True)
class Adapted:
    events: tuple[CanonicalEvent, ...] = ()
    ignored: str | None = None  # why there are no events ("ping", "edit", "private message", ...)
    challenge: str | None = None  # Slack url_verification answer
    delivery_id: str | None = None  # the platform's delivery id, for logs and raw records


Json = dict[str, Any]


def header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    value = headers.get(lowered)
    if value is not None:
        return value
    for key, candidate in headers.items():
        if key.lower() == lowered:
            return candidate
    return None


def load_body(body: bytes, headers: Mapping[str, str]) -> Json:
    """The JSON object of a delivery: raw JSON, or a form field ``payload=<json>``."""
    content_type = (header(headers, "content-type") or "").split(";")[0].strip().lower()
    data: bytes | str = body
    # a JSON body labelled as a form (some senders do) is read as JSON
    if content_type == "application/x-www-form-urlencoded" and not body.lstrip().startswith(b"{"):
        try:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=100)
        except (UnicodeDecodeError, ValueError):
            raise PayloadError("body", "form body is not valid UTF-8 url-encoding") from None
        if "payload" not in form:
            raise PayloadError("payload", "form body without a payload field")
        data = form["payload"][0]
    try:
        value = json.loads(data)
    except RecursionError:
        raise PayloadError("body", "JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, int digit limit
        raise PayloadError("body", f"not valid JSON ({type(exc).__name__})") from None
    if not isinstance(value, dict):
        raise PayloadError("body", f"must be a JSON object, got {type_name(value)}")
    return value


def type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _get(data: Json, path: str) -> object:
    current: object = data
    walked: list[str] = []
    for part in path.split("."):
        if not isinstance(current, dict):
            raise PayloadError(".".join(walked), f"must be an object, got {type_name(current)}")
        walked.append(part)
        current = current.get(part)
    return current


def obj(data: Json, path: str) -> Json:
    value = _get(data, path)
    if not isinstance(value, dict):
        raise PayloadError(path, f"must be an object, got {type_name(value)}")
    return value


def opt_obj(data: Json, path: str) -> Json | None:
    value = _get(data, path)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise PayloadError(path, f"must be an object or null, got {type_name(value)}")
    return value


def text(data: Json, path: str) -> str:
    value = _get(data, path)
    if not isinstance(value, str) or not value.strip():
        raise PayloadError(path, f"must be a non-empty string, got {type_name(value)}")
    if len(value) > 256:
        raise PayloadError(path, "longer than 256 characters")
    return value


def opt_text(data: Json, path: str) -> str | None:
    value = _get(data, path)
    if value is None:
        return None
    return text(data, path)


def integer(data: Json, path: str) -> int:
    value = _get(data, path)
    if isinstance(value, bool) or not isinstance(value, int):
        raise PayloadError(path, f"must be an integer, got {type_name(value)}")
    if abs(value) >= 2**63:
        raise PayloadError(path, "integer out of range")
    return value


def opt_integer(data: Json, path: str) -> int | None:
    return None if _get(data, path) is None else integer(data, path)


def ident(data: Json, path: str) -> str:
    """A platform id: an integer or a non-empty string, returned as a string."""
    value = _get(data, path)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(integer(data, path))
    if isinstance(value, str):
        return text(data, path)
    raise PayloadError(path, f"must be an id (integer or string), got {type_name(value)}")


def opt_ident(data: Json, path: str) -> str | None:
    return None if _get(data, path) is None else ident(data, path)


def flag(data: Json, path: str) -> bool:
    """A boolean that may be absent (absent or null means false)."""
    value = _get(data, path)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise PayloadError(path, f"must be a boolean, got {type_name(value)}")
    return value


def iso_time(data: Json, path: str) -> datetime:
    """ISO-8601 with a zone (``2021-03-30T20:09:52Z``, ``...000-04:00``) as UTC."""
    raw = text(data, path)
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise PayloadError(path, "must be an ISO-8601 time") from None
    if value.tzinfo is None or value.utcoffset() is None:
        raise PayloadError(path, "must carry a time zone")
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise PayloadError(path, "time out of range") from None


_EPOCH = re.compile(r"\d{1,12}(\.\d{1,9})?")


def epoch_time(data: Json, path: str) -> datetime:
    """Slack's ``"1719209506.817929"`` (epoch seconds as a string; an integer is accepted)."""
    value = _get(data, path)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _EPOCH.fullmatch(value):
        raise PayloadError(path, 'must be epoch seconds like "1719209506.817929"')
    return epoch_to_datetime(value, path)


def epoch_to_datetime(value: str, path: str) -> datetime:
    try:
        micros = int(Decimal(value) * 1_000_000)
        return datetime.fromtimestamp(micros / 1_000_000, UTC).replace(microsecond=micros % 1_000_000)
    except (InvalidOperation, OverflowError, OSError, ValueError):
        raise PayloadError(path, "time out of range") from None


def make_event(**fields: Any) -> CanonicalEvent:
    """Build the canonical event; a value the model refuses becomes a PayloadError."""
    try:
        return CanonicalEvent(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "event"
        raise PayloadError(f"(canonical).{where}", str(first.get("msg", "invalid value"))) from None


def host_of(instance: str) -> str:
    """``https://forum.example.org/`` -> ``forum.example.org`` (readable community ids)."""
    value = instance.strip().rstrip("/")
    for prefix in ("https://", "http://"):
        if value.lower().startswith(prefix):
            value = value[len(prefix) :]
            break
    return value
