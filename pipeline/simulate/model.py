"""The request shape shared by the generator, the sender and ``pulse replay``."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Request:
    """One HTTP POST to the gateway: a platform delivery or a chunk of canonical events."""

    platform: str  # github | discourse | slack | generic
    path: str  # /webhooks/<platform> or /v1/events
    headers: dict[str, str]
    body: bytes
    occurred_at: datetime | None = None  # event time of what it carries (not sent)
    meta: dict[str, Any] = field(default_factory=dict, compare=False)  # community, behaviour (not sent)

    def to_json_line(self) -> str:
        """One NDJSON line, the format ``pulse replay`` reads (``body`` text, or ``body_b64``).

        A bearer token is a secret and is left out (replay adds the configured one);
        HMAC signatures reveal nothing about their secret and are kept.
        """
        headers = {k: v for k, v in self.headers.items() if k.lower() != "authorization"}
        record: dict[str, Any] = {"platform": self.platform, "path": self.path, "headers": headers}
        try:
            record["body"] = self.body.decode("utf-8")
        except UnicodeDecodeError:
            record["body_b64"] = base64.b64encode(self.body).decode("ascii")
        if self.occurred_at is not None:
            record["occurred_at"] = self.occurred_at.isoformat()
        if self.meta:
            record["meta"] = self.meta
        return json.dumps(record, ensure_ascii=False, separators=(",", ":"))
