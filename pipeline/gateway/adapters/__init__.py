"""Platform payloads -> canonical events: pure functions, no I/O.

``adapt(delivery)`` dispatches on ``Delivery.platform`` (``github``,
``discourse``, ``slack``) and returns ``Adapted``: the events, or none with the
reason they were ignored, or Slack's url_verification challenge. A body we cannot
read raises ``PayloadError(field, reason)`` (the gateway answers 400); nothing else
escapes. Signatures are checked before, by ``pipeline.gateway.signatures``.

``adapt_generic`` reads the generic API's JSON array / NDJSON of canonical events.

Each platform module's docstring documents its ids and kinds (also docs/platforms.md).
Adapters emit the platform's raw community id; the gateway maps it through the
communities directory.
"""

from __future__ import annotations

from collections.abc import Callable

from ._base import Adapted, Delivery, PayloadError
from .discourse import adapt_discourse
from .generic import MAX_ITEMS, UnsupportedMediaType, adapt_generic
from .github import adapt_github
from .slack import adapt_slack

__all__ = [
    "ADAPTERS",
    "MAX_ITEMS",
    "Adapted",
    "Delivery",
    "PayloadError",
    "UnsupportedMediaType",
    "adapt",
    "adapt_generic",
]

ADAPTERS: dict[str, Callable[[Delivery], Adapted]] = {
    "github": adapt_github,
    "discourse": adapt_discourse,
    "slack": adapt_slack,
}


def adapt(delivery: Delivery) -> Adapted:
    adapter = ADAPTERS.get(delivery.platform)
    if adapter is None:
        raise PayloadError("platform", f"unknown platform {delivery.platform[:32]!r}")
    return adapter(delivery)
