"""Re-send recorded deliveries to a running gateway.

PATH is a file or a folder of:

- fixture files, ``<platform>/<event>__N.json`` (a JSON body each; the file name
  gives the event header),
- NDJSON of recorded requests, one ``{"platform", "headers", "body"}`` object per
  line (as written by ``pulse simulate --dry-run`` or read back from webhooks.raw),
- NDJSON of canonical events (lines with ``event_id`` and ``kind``), sent to
  /v1/events in chunks of --chunk events.

Every request is signed again with the configured secrets just before it is sent
(PULSE_GITHUB_WEBHOOK_SECRET, PULSE_DISCOURSE_WEBHOOK_SECRET(S),
PULSE_SLACK_SIGNING_SECRET; canonical events use a PULSE_INGEST_TOKENS token).
A 503 is retried after the gateway's Retry-After. Progress goes to stderr, a
summary (sent, accepted, ignored, refused by reason) to stdout. The exit status is
1 when anything was refused.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.config import Settings

HELP = "re-send recorded deliveries or canonical events to the gateway"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="fixture file/folder, recorded-request NDJSON or event NDJSON")
    parser.add_argument("--url", help="gateway base URL (default: http://PULSE_GATEWAY_HOST:PULSE_GATEWAY_PORT)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    parser.add_argument("--rate", type=float, help="at most this many requests per second")
    parser.add_argument("--chunk", type=int, default=500, help="canonical events per /v1/events request")
    parser.add_argument("--sender", help="which PULSE_INGEST_TOKENS sender to send events as (default: the first)")
    parser.add_argument(
        "--discourse-instance",
        default="http://forum.example",
        help="X-Discourse-Instance for Discourse fixture files (they carry no headers)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def run(args: argparse.Namespace, settings: Settings) -> int:
    import time

    from pipeline.replay.recorded import Recorded, RecordingError, read_path, route, signed_headers
    from pipeline.simulate.model import Request
    from pipeline.simulate.send import send

    if not args.path.exists():
        print(f"pulse replay: {args.path} does not exist", file=sys.stderr)
        return 2
    if args.chunk < 1 or args.concurrency < 1:
        print("pulse replay: --chunk and --concurrency must be at least 1", file=sys.stderr)
        return 2
    try:
        recorded = list(read_path(args.path, chunk=args.chunk, instance=args.discourse_instance))
        # sign once up front, so a missing secret stops the run before anything is sent
        for item in recorded:
            signed_headers(item, settings, time.time(), sender=args.sender)
    except (RecordingError, OSError) as exc:
        print(f"pulse replay: {exc}", file=sys.stderr)
        return 2
    if not recorded:
        print("pulse replay: nothing to send", file=sys.stderr)
        return 0

    by_request: dict[int, Recorded] = {}
    requests = []
    for item in recorded:
        request = Request(item.platform, route(item), dict(item.headers), item.body)
        by_request[id(request)] = item
        requests.append(request)

    def prepare(request: Request) -> Request:
        # signed at send time: Slack signatures are only valid for 5 minutes
        item = by_request[id(request)]
        headers = signed_headers(item, settings, time.time(), sender=args.sender)
        return Request(request.platform, request.path, headers, request.body)

    url = args.url or f"http://{settings.gateway_host}:{settings.gateway_port}"
    summary = send(
        requests,
        url,
        concurrency=args.concurrency,
        rate=args.rate,
        prepare=prepare,
        progress=None if args.quiet else sys.stderr,
    )
    print(summary.format())
    return 0 if summary.ok else 1
