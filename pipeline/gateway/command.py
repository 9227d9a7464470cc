"""Serve the webhook gateway (starlette + uvicorn).

Routes: POST /webhooks/github, /webhooks/discourse, /webhooks/slack (the
platforms' own formats, signed), POST /v1/events (canonical events, bearer
token), GET /healthz, /readyz (200 only while Kafka answers), /metrics and
/openapi.json.

A delivery is answered 2xx only after Kafka acknowledged it (acks=all); when
Kafka is down or slow past PULSE_PRODUCE_TIMEOUT_S the answer is 503 with
Retry-After, so the platform retries. Binds PULSE_GATEWAY_HOST:PULSE_GATEWAY_PORT.

--workers N runs N gateway processes on the same port (uvicorn's supervisor,
which restarts a worker that dies): one Python process is limited to about one
core by its interpreter lock. Each worker has its own Kafka producer; their
metrics go through prometheus-client's multiprocess mode (a private directory
per run, pipeline.gateway.multiproc), so any worker's /metrics shows the whole
gateway. With one worker the metrics stay in the process's own registry.
"""

from __future__ import annotations

import argparse

from pipeline.config import Settings

HELP = "serve the webhook gateway (HTTP -> Kafka)"

# the app every worker process builds from the environment (settings are PULSE_* variables)
APP_FACTORY = "pipeline.gateway.command:app_from_environment"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to bind (default: PULSE_GATEWAY_HOST)")
    parser.add_argument("--port", type=int, help="port to bind (default: PULSE_GATEWAY_PORT)")
    parser.add_argument(
        "--access-log", action="store_true", help="log every request (off by default: it costs throughput)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="gateway processes sharing the port (default 1); each has its own Kafka producer, "
        "/metrics shows all of them",
    )


def app_from_environment() -> object:
    """The gateway app of one worker process, from the PULSE_* environment (uvicorn factory)."""
    import os

    from pipeline import config
    from pipeline.gateway import multiproc
    from pipeline.gateway.app import create_app
    from pipeline.gateway.producer import KafkaDeliveryProducer
    from pipeline.logs import setup_logging

    settings = config.load()
    # a worker process does not run pulse's main(): the same logging setup as the CLI
    setup_logging(settings.log_level)
    # set by serve() for N > 1 before the workers were spawned: /metrics merges every worker's
    return create_app(settings, KafkaDeliveryProducer(settings), multiprocess_dir=os.environ.get(multiproc.ENV))


def serve(
    app: object,
    *,
    host: str,
    port: int,
    workers: int = 1,
    log_level: str = "info",
    access_log: bool = False,
    timeout_keep_alive: int = 5,
) -> None:
    """Run ``app``: an ASGI app, or the import string of an app factory (needed for ``workers`` > 1).

    With ``workers`` > 1 the workers are spawned with ``PROMETHEUS_MULTIPROC_DIR`` naming a fresh
    private directory (removed when serving ends); the factory passes it to ``create_app`` as
    ``multiprocess_dir`` so that /metrics merges every worker's metrics.
    """
    import contextlib

    import uvicorn

    from pipeline.gateway import multiproc

    if workers > 1 and not isinstance(app, str):
        raise ValueError("several workers need the app as the import string of a factory")
    options: dict[str, object] = {"factory": True} if isinstance(app, str) else {}
    if workers > 1:
        options["workers"] = workers
    # set before uvicorn spawns the workers: prometheus-client picks its mode when first imported
    with multiproc.metrics_directory() if workers > 1 else contextlib.nullcontext():
        uvicorn.run(
            app,  # type: ignore[arg-type]
            host=host,
            port=port,
            log_level=log_level,
            access_log=access_log,
            # the gateway answers fast or 503s; do not let slow clients hold connections forever
            timeout_keep_alive=timeout_keep_alive,
            timeout_graceful_shutdown=10,
            server_header=False,
            **options,  # type: ignore[arg-type]
        )


def run(args: argparse.Namespace, settings: Settings) -> int:
    import sys

    from pipeline.gateway.app import create_app
    from pipeline.gateway.producer import KafkaDeliveryProducer

    if args.workers < 1:
        print("pulse gateway: --workers must be at least 1", file=sys.stderr)
        return 2
    try:
        # built here even with several workers: a bad setting fails once, before any process starts
        app = create_app(settings, KafkaDeliveryProducer(settings))
    except ValueError as exc:  # e.g. an invalid PULSE_COMMUNITIES_FILE (DirectoryError)
        print(f"pulse gateway: {exc}", file=sys.stderr)
        return 2
    serve(
        app if args.workers == 1 else APP_FACTORY,
        host=args.host or settings.gateway_host,
        port=args.port or settings.gateway_port,
        workers=args.workers,
        log_level=settings.log_level.lower(),
        access_log=bool(args.access_log),
    )
    return 0
