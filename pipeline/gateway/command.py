"""Serve the webhook gateway (starlette + uvicorn).

Routes: POST /webhooks/github, /webhooks/discourse, /webhooks/slack (the
platforms' own formats, signed), POST /v1/events (canonical events, bearer
token), GET /healthz, /readyz (200 only while Kafka answers), /metrics and
/openapi.json.

A delivery is answered 2xx only after Kafka acknowledged it (acks=all); when
Kafka is down or slow past PULSE_PRODUCE_TIMEOUT_S the answer is 503 with
Retry-After, so the platform retries. Binds PULSE_GATEWAY_HOST:PULSE_GATEWAY_PORT.
"""

from __future__ import annotations

import argparse

from pipeline.config import Settings

HELP = "serve the webhook gateway (HTTP -> Kafka)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to bind (default: PULSE_GATEWAY_HOST)")
    parser.add_argument("--port", type=int, help="port to bind (default: PULSE_GATEWAY_PORT)")
    parser.add_argument(
        "--access-log", action="store_true", help="log every request (off by default: it costs throughput)"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    import sys

    import uvicorn

    from pipeline.gateway.app import create_app
    from pipeline.gateway.producer import KafkaDeliveryProducer

    try:
        app = create_app(settings, KafkaDeliveryProducer(settings))
    except ValueError as exc:  # e.g. an invalid PULSE_COMMUNITIES_FILE (DirectoryError)
        print(f"pulse gateway: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(
        app,
        host=args.host or settings.gateway_host,
        port=args.port or settings.gateway_port,
        log_level=settings.log_level.lower(),
        access_log=bool(args.access_log),
        # the gateway answers fast or 503s; do not let slow clients hold connections forever
        timeout_keep_alive=5,
        timeout_graceful_shutdown=10,
        server_header=False,
    )
    return 0
