"""The gateway's HTTP shell (starlette): read, check, normalize, store, answer.

Each webhook request goes through the same short path:

    size and content type -> body (counted while streaming) -> signature
    -> pure adapter -> community directory -> Kafka acknowledgement -> answer

Answers: 202 accepted (Kafka acknowledged the raw delivery and its events),
202 ignored (nothing we use; counted), 200 Slack url_verification challenge,
400 malformed or invalid body (naming the field), 401 bad signature or
token, 413 too large, 415 wrong content type, 503 + Retry-After when Kafka
did not acknowledge in time, 429 + Retry-After when one sender sends faster than
its rate limit (pipeline.gateway.ratelimit; per sender key, after authentication). Every error body is
``{"error": ..., "field": ..., "reason": ...}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from pipeline import metrics
from pipeline.config import Secret, Settings
from pipeline.events import ENGAGEMENT_KINDS, CanonicalEvent
from pipeline.gateway import adapters, multiproc, signatures
from pipeline.gateway.adapters import generic as generic_adapter
from pipeline.gateway.openapi import openapi_document
from pipeline.gateway.producer import (
    DeliveryProducer,
    ProduceUnavailable,
    RawDelivery,
    raw_headers,
)
from pipeline.gateway.ratelimit import Limit, RateLimiter, sender_key

log = logging.getLogger(__name__)

WEBHOOK_PLATFORMS = ("github", "discourse", "slack")
GENERIC = "generic"  # metric label of /v1/events: declared platforms are an open set
WEBHOOK_CONTENT_TYPES = frozenset({"application/json", "application/x-www-form-urlencoded"})
EVENTS_CONTENT_TYPES = generic_adapter.CONTENT_TYPES
JSON = "application/json"
KAFKA_UP_REFRESH_S = 5.0  # how often each gateway process re-checks Kafka for kafka_up


# ------------------------------------------------------------------ pure helpers


class Refusal(Exception):
    """A request we answer with an error: status, JSON body and a metric reason."""

    def __init__(
        self,
        status: int,
        error: str,
        reason: str,
        *,
        field: str | None = None,
        metric_reason: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.reason = reason
        self.field = field
        self.metric_reason = metric_reason
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "field": self.field, "reason": self.reason}


def media_type(content_type: str | None) -> str:
    """``application/json; charset=utf-8`` -> ``application/json``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def declared_length(value: str | None) -> int | None:
    """Content-Length as an int, None when absent; a malformed value is a 400."""
    if value is None:
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit()):
        raise Refusal(400, "malformed Content-Length header", f"not a byte count: {text[:40]!r}",
                      field="header.content-length", metric_reason="payload")
    return int(text)


def sender_for(authorization: str | None, tokens: Mapping[str, Secret]) -> str | None:
    """The sender whose bearer token was presented, compared in constant time, else None."""
    scheme, _, presented = (authorization or "").strip().partition(" ")
    token = presented.strip().encode("utf-8", "surrogateescape")
    if scheme.lower() != "bearer" or not token:
        return None
    found: str | None = None
    # look at every token, so the time taken does not say which one nearly matched
    for sender, secret in tokens.items():
        if hmac.compare_digest(token, secret.reveal().encode("utf-8")):
            found = sender
    return found


def kind_label(kind: str) -> str:
    """Metric label of a kind: generic senders may declare any kind, labels must stay bounded."""
    return kind if kind in ENGAGEMENT_KINDS else "other"


def json_response(status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8"),
        status_code=status,
        media_type=JSON,
        headers=dict(headers or {}),
    )


# ------------------------------------------------------------------ community directory


CommunityMap = Callable[[CanonicalEvent], CanonicalEvent]


def community_map(settings: Settings) -> CommunityMap:
    """Renames/groups of the community directory (pipeline.communities), applied to each event."""
    try:
        from pipeline.communities import load_directory
    except ImportError:
        # IDENTITY STEP: pipeline.communities (engineer C) is not in this build yet, so raw
        # community ids pass through unchanged. Remove this branch once it has landed.
        log.warning("pipeline.communities missing: community ids are not mapped")
        return lambda event: event

    directory = load_directory(settings.communities_file)

    def apply(event: CanonicalEvent) -> CanonicalEvent:
        mapped = directory.community_for(event.platform, event.space_id, event.community_id)
        if mapped == event.community_id:
            return event
        return event.model_copy(update={"community_id": mapped})

    return apply


# ------------------------------------------------------------------ the app


def create_app(
    settings: Settings,
    producer: DeliveryProducer,
    *,
    communities: CommunityMap | None = None,
    clock: Callable[[], float] = time.time,
    registry: CollectorRegistry | None = None,
    multiprocess_dir: str | None = None,
) -> Starlette:
    """The gateway as an ASGI app; ``producer`` is started and closed with the app.

    Metrics go to ``registry`` (a fresh one by default, so apps built by tests never share state),
    and /metrics shows that registry. With ``multiprocess_dir`` (one of several gateway processes,
    prometheus-client in multiprocess mode: pipeline.gateway.multiproc) /metrics shows the metrics
    of every process writing there, merged (kafka_up as the minimum over the live processes).
    Every process re-checks Kafka every ``KAFKA_UP_REFRESH_S`` for kafka_up, traffic or not.
    """
    registry = registry if registry is not None else CollectorRegistry()
    gm = metrics.GatewayMetrics(registry)
    scraped = registry if multiprocess_dir is None else multiproc.scrape_registry(multiprocess_dir)
    mapper = communities if communities is not None else community_map(settings)
    openapi_bytes = json.dumps(openapi_document(settings), indent=None).encode("utf-8")
    retry_after = str(max(1, math.ceil(settings.produce_timeout_s)))
    max_body = settings.max_body_bytes
    limiter = RateLimiter(Limit(settings.rate_limit_per_s, settings.rate_limit_burst))

    children: dict[tuple[object, ...], Any] = {}

    def child(metric: Any, *labels: str) -> Any:
        # labels() costs a lock and a tuple per call; these run several times per delivery
        key = (metric, *labels)
        found = children.get(key)
        if found is None:
            found = children[key] = metric.labels(*labels)
        return found

    def rate_limit(key: str) -> None:
        # after authentication: a forged header must not use up a real sender's budget
        decision = limiter.check(key, time.monotonic())
        if not decision.allowed:
            wait = decision.retry_after_header()
            raise Refusal(429, "rate limited", f"this sender exceeds its rate limit; retry after {wait} s",
                          metric_reason="rate_limited", headers={"Retry-After": wait})

    async def read_body(request: Request, allowed: frozenset[str], platform: str) -> bytes:
        length = declared_length(request.headers.get("content-length"))
        if length is not None and length > max_body:
            raise Refusal(413, "body too large", f"Content-Length {length} exceeds {max_body} bytes",
                          metric_reason="too_large")
        ctype = media_type(request.headers.get("content-type"))
        if ctype not in allowed:
            raise Refusal(415, "unsupported content type",
                          f"got {ctype or '(none)'!r}; expected one of {', '.join(sorted(allowed))}",
                          field="header.content-type", metric_reason="media_type")
        chunks: list[bytes] = []
        size = 0
        try:
            # count while streaming: a missing or lying Content-Length must not get past the cap
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_body:
                    raise Refusal(413, "body too large", f"body exceeds {max_body} bytes",
                                  metric_reason="too_large")
                chunks.append(chunk)
        except ClientDisconnect:
            raise Refusal(400, "incomplete body", "the client disconnected before the body ended",
                          metric_reason="payload") from None
        return b"".join(chunks)

    async def store(raw: RawDelivery, events: list[CanonicalEvent], platform: str) -> None:
        started = time.perf_counter()
        try:
            await producer.store(raw, events)
        except ProduceUnavailable as exc:
            log.warning("refusing a %s delivery: %s", platform, exc.reason)
            gm.kafka_up.set(0)
            raise Refusal(503, "kafka unavailable", exc.reason, metric_reason=exc.metric_reason,
                          headers={"Retry-After": retry_after}) from None
        # acknowledged deliveries only: failures are counted in deliveries_failed
        gm.produce_latency.observe(time.perf_counter() - started)
        gm.kafka_up.set(1)
        child(gm.deliveries_accepted, platform).inc()
        for event in events:
            child(gm.events_produced, platform, kind_label(event.kind)).inc()

    def verify(platform: str, headers: Mapping[str, str], body: bytes) -> None:
        try:
            if platform == "github":
                signatures.verify_github(settings.github_webhook_secret, headers, body)
            elif platform == "discourse":
                instance = headers.get("x-discourse-instance", "")
                signatures.verify_discourse(settings.discourse_secret_for(instance), headers, body)
            else:
                signatures.verify_slack(settings.slack_signing_secret, headers, body, now=clock())
        except signatures.SignatureError as exc:
            raise Refusal(401, "signature check failed", exc.reason, field=_signature_field(platform),
                          metric_reason="signature") from None

    def adapt(delivery: adapters.Delivery) -> adapters.Adapted:
        try:
            return adapters.adapt(delivery)
        except adapters.PayloadError as exc:
            raise Refusal(400, "invalid payload", exc.reason, field=exc.field,
                          metric_reason="payload") from None
        except Exception:
            # contract: adapters raise only PayloadError; a bug must still not take the door down
            log.exception("adapter failed on a %s delivery", delivery.platform)
            raise Refusal(400, "invalid payload", "the payload could not be normalized",
                          metric_reason="payload") from None

    def webhook(platform: str) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            async def inner() -> Response:
                body = await read_body(request, WEBHOOK_CONTENT_TYPES, platform)
                headers = dict(request.headers.items())  # starlette gives lower-case names
                verify(platform, headers, body)
                rate_limit(sender_key(platform, headers))
                received_at = datetime.now(UTC)
                adapted = adapt(adapters.Delivery(platform, headers, body, received_at))
                if adapted.challenge is not None:
                    ignored(platform, "challenge")
                    return json_response(200, {"challenge": adapted.challenge})
                if not adapted.events:
                    reason = adapted.ignored or "no events"
                    ignored(platform, ignore_label(reason))
                    return json_response(202, {"status": "ignored", "reason": reason})
                events = [mapper(e) for e in adapted.events]
                # keyless: the sticky partitioner then fills one batch at a time, which costs
                # kafka-python far less CPU than spreading small batches over every partition
                raw = RawDelivery(None, body, raw_headers(headers, platform, received_at))
                await store(raw, events, platform)
                return json_response(
                    202, {"status": "accepted", "events": len(events), "delivery_id": adapted.delivery_id}
                )

            return await guarded(platform, inner, slack=platform == "slack")

        return handle

    async def generic_events(request: Request) -> Response:
        async def inner() -> Response:
            sender = sender_for(request.headers.get("authorization"), settings.ingest_tokens)
            if sender is None:
                raise Refusal(401, "unauthorized", "a valid bearer token is required",
                              field="header.authorization", metric_reason="unauthorized",
                              headers={"WWW-Authenticate": 'Bearer realm="pulse"'})
            rate_limit(sender_key(GENERIC, {}, sender=sender))
            body = await read_body(request, EVENTS_CONTENT_TYPES, GENERIC)
            ctype = media_type(request.headers.get("content-type"))
            received_at = datetime.now(UTC)
            try:
                parsed = adapters.adapt_generic(body, ctype, sender, received_at)
            except adapters.UnsupportedMediaType as exc:
                raise Refusal(415, "unsupported content type", exc.reason, field="header.content-type",
                              metric_reason="media_type") from None
            except adapters.PayloadError as exc:
                raise Refusal(400, "invalid events", exc.reason, field=exc.field,
                              metric_reason="payload") from None
            except Exception:
                log.exception("generic adapter failed (sender %s)", sender)
                raise Refusal(400, "invalid events", "the events could not be read",
                              metric_reason="payload") from None
            if not parsed:
                ignored(GENERIC, "other")
                return json_response(202, {"status": "ignored", "reason": "no events in the body"})
            events = [mapper(e) for e in parsed]
            headers = dict(request.headers.items())
            raw = RawDelivery(None, body, raw_headers(headers, GENERIC, received_at, sender=sender))
            await store(raw, events, GENERIC)
            return json_response(202, {"status": "accepted", "events": len(events), "delivery_id": None})

        return await guarded(GENERIC, inner)

    async def guarded(platform: str, inner: Callable[[], Awaitable[Response]], slack: bool = False) -> Response:
        child(gm.deliveries_received, platform).inc()
        gm.requests_in_flight.inc()
        try:
            response = await inner()
        except Refusal as refusal:
            if refusal.status >= 500:
                gm.deliveries_failed.labels(platform=platform, reason=refusal.metric_reason).inc()
            else:
                gm.deliveries_refused.labels(platform=platform, reason=refusal.metric_reason).inc()
            headers = dict(refusal.headers)
            if slack and refusal.status < 500 and refusal.status != 429:
                headers["X-Slack-No-Retry"] = "1"  # a retry of a 4xx cannot succeed
            return json_response(refusal.status, refusal.body(), headers)
        except Exception:
            # a bug of ours: say so (500 is not in the OpenAPI document, so tests notice) and count it
            log.exception("unexpected error on a %s request", platform)
            gm.deliveries_failed.labels(platform=platform, reason="internal").inc()
            return json_response(500, {"error": "internal error", "field": None, "reason": "see the gateway log"})
        finally:
            gm.requests_in_flight.dec()
        return response

    def ignored(platform: str, reason: str) -> None:
        gm.deliveries_ignored.labels(platform=platform, reason=reason).inc()
        child(gm.deliveries_accepted, platform).inc()  # F: accepted includes ignored

    async def healthz(_request: Request) -> Response:
        return json_response(200, {"status": "ok"})

    async def readyz(_request: Request) -> Response:
        ok = await producer.ready()
        gm.kafka_up.set(1 if ok else 0)
        if ok:
            return json_response(200, {"status": "ready"})
        return json_response(503, {"error": "not ready", "field": None, "reason": "kafka is not answering"},
                             {"Retry-After": retry_after})

    async def metrics_endpoint(_request: Request) -> Response:
        payload, content_type = metrics.exposition(scraped)
        return Response(payload, media_type=content_type)

    async def openapi(_request: Request) -> Response:
        return Response(openapi_bytes, media_type=JSON)

    async def watch_kafka() -> None:
        # kafka_up must be current without traffic or readiness probes, or a stale 0 reads as
        # "Kafka unreachable" (and several processes' values merge as their minimum)
        while True:
            try:
                ok = await producer.ready()
            except Exception:
                log.exception("kafka readiness probe failed")
                ok = False
            gm.kafka_up.set(1 if ok else 0)
            await asyncio.sleep(KAFKA_UP_REFRESH_S if ok else 1.0)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await producer.start()
        watcher = asyncio.get_running_loop().create_task(watch_kafka())
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await producer.close()

    handlers = {f"/webhooks/{p}": webhook(p) for p in WEBHOOK_PLATFORMS}
    handlers["/v1/events"] = generic_events
    routes = [Route(path, handler, methods=["POST"]) for path, handler in handlers.items()]
    routes += [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    return _Gateway(handlers, routes=routes, lifespan=lifespan)


class _Gateway(Starlette):
    """Starlette with a short path for the delivery routes (POST on an exact path).

    Each request through Starlette's middleware stack and router costs a few dozen microseconds of
    one core that the gateway needs for deliveries; the handlers catch every exception themselves
    (``guarded``), so the error middleware has nothing to add there. Everything else (GET routes, other
    methods, unknown paths, lifespan) goes through Starlette as before.
    """

    def __init__(self, fast: Mapping[str, Callable[[Request], Awaitable[Response]]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._fast = dict(fast)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            handler = self._fast.get(scope["path"])
            if handler is not None:
                scope["app"] = self
                response = await handler(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _signature_field(platform: str) -> str:
    return {
        "github": "header.x-hub-signature-256",
        "discourse": "header.x-discourse-event-signature",
        "slack": "header.x-slack-signature",
    }[platform]


def ignore_label(reason: str) -> str:
    """Metric label of an ignored reason ("unsupported event: X" -> "unsupported"): a bounded set."""
    head = reason.split(":", 1)[0].strip().lower().replace(" ", "_").replace("-", "_")
    for label in metrics.IGNORE_REASONS:
        if head == label or head.startswith(label):
            return label
    return "other"
