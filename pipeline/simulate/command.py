"""Send simulated communities to the gateway as real, signed platform deliveries.

Each community gets a behaviour (healthy, dying, dead, one_poster, on_demand,
when_we_can) and a platform (github, discourse, slack, generic); its history over
--days of event time, ending at --end, is sent in each platform's own webhook
format, signed with the configured secrets (PULSE_GITHUB_WEBHOOK_SECRET,
PULSE_DISCOURSE_WEBHOOK_SECRET[S], PULSE_SLACK_SIGNING_SECRET; the generic API
uses the first PULSE_INGEST_TOKENS entry). Slack requests are signed at send
time, as Slack does, while their events keep their own (past) times.

Shapes need history: dying needs about 35 days, dead more than 16.

Examples:
  pulse simulate --communities 12 --days 35
  pulse simulate --behaviours one_poster,dead --platforms slack --seed 7
  pulse simulate --dry-run requests.ndjson      # write, do not send

Exit status: 0 when nothing was refused, 1 otherwise, 2 on a usage problem.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime

from pipeline.config import Settings
from pipeline.simulate.model import Request

HELP = "send simulated, signed deliveries of N communities to the gateway"

DEFAULT_BEHAVIOURS = "healthy,dying,dead,one_poster,on_demand,when_we_can"


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--communities", type=int, default=12, help="number of communities (default 12)")
    parser.add_argument(
        "--behaviours", type=_csv, default=_csv(DEFAULT_BEHAVIOURS), help=f"comma list (default {DEFAULT_BEHAVIOURS})"
    )
    parser.add_argument("--days", type=float, default=35.0, help="span of event time in days (default 35)")
    parser.add_argument("--end", type=_time, default=None, help="end of the span, ISO-8601 (default now)")
    parser.add_argument(
        "--platforms",
        type=_csv,
        default=None,
        help="comma list of github,discourse,slack,generic (default: the three platforms, "
        "plus generic when PULSE_INGEST_TOKENS is set)",
    )
    parser.add_argument("--url", default=None, help="gateway base URL (default http://127.0.0.1:PULSE_GATEWAY_PORT)")
    parser.add_argument("--rate", type=float, default=0.0, help="requests per second at most (default 0: no limit)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    parser.add_argument("--retries", type=int, default=5, help="retries of a 429/503 or connection error (default 5)")
    parser.add_argument("--seed", type=int, default=1, help="random seed: same seed, same deliveries (default 1)")
    parser.add_argument(
        "--dry-run", metavar="FILE", default=None, help="write the requests as NDJSON to FILE ('-' = stdout) and stop"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.simulate.generate import Spec, generate
    from pipeline.simulate.render import Credentials, resign_slack

    platforms = args.platforms or (
        ("github", "discourse", "slack", "generic") if settings.ingest_tokens else ("github", "discourse", "slack")
    )
    try:
        spec = Spec(
            communities=args.communities,
            behaviours=args.behaviours,
            platforms=platforms,
            days=args.days,
            end=args.end or datetime.now(UTC),
            seed=args.seed,
        )
    except ValueError as exc:
        print(f"pulse simulate: {exc}", file=sys.stderr)
        return 2
    credentials = Credentials.from_settings(settings)
    missing = _missing(spec.platforms, credentials)
    if missing and not args.dry_run:
        print(
            f"pulse simulate: not configured, the gateway would refuse these deliveries: {', '.join(missing)}",
            file=sys.stderr,
        )
        return 2
    for name in missing:
        print(f"pulse simulate: warning: {name} not set; those requests are unsigned", file=sys.stderr)
    requests = generate(spec, credentials, time.time())

    if args.dry_run:
        out = sys.stdout if args.dry_run == "-" else open(args.dry_run, "w", encoding="utf-8")  # noqa: SIM115
        try:
            for request in requests:
                out.write(request.to_json_line() + "\n")
        finally:
            if out is not sys.stdout:
                out.close()
        print(f"pulse simulate: wrote {len(requests)} requests", file=sys.stderr)
        return 0

    from pipeline.simulate.send import send

    url = args.url or f"http://127.0.0.1:{settings.gateway_port}"
    slack_secret = credentials.slack

    def prepare(request: Request) -> Request:
        # Slack refuses a signature older than 5 minutes: sign again just before sending
        if slack_secret and request.platform == "slack":
            return resign_slack(request, slack_secret, time.time())
        return request

    print(
        f"pulse simulate: {len(requests)} requests for {spec.communities} communities "
        f"({', '.join(spec.behaviours)} on {', '.join(spec.platforms)}) to {url}",
        file=sys.stderr,
    )
    summary = send(
        requests,
        url,
        concurrency=args.concurrency,
        rate=args.rate or None,
        max_retries=args.retries,
        prepare=prepare,
    )
    print(summary.format())
    return 0 if summary.ok else 1


def _missing(platforms: tuple[str, ...], credentials: object) -> list[str]:
    from pipeline.simulate.render import DISCOURSE_INSTANCE, Credentials

    assert isinstance(credentials, Credentials)
    missing = []
    if "github" in platforms and not credentials.github:
        missing.append("PULSE_GITHUB_WEBHOOK_SECRET")
    if "discourse" in platforms and not credentials.discourse(DISCOURSE_INSTANCE):
        missing.append("PULSE_DISCOURSE_WEBHOOK_SECRET")
    if "slack" in platforms and not credentials.slack:
        missing.append("PULSE_SLACK_SIGNING_SECRET")
    if "generic" in platforms and not credentials.ingest:
        missing.append("PULSE_INGEST_TOKENS")
    return missing
