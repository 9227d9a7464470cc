"""The whole pipeline on this machine, on the embedded defaults.

Starts the local stack (Kafka, and Prometheus when installed), the gateway and the
worker (with the embedded ClickHouse), sends sample deliveries through the gateway
(simulated communities of every behaviour, in each platform's own signed format),
waits until the worker has judged them, prints the community health report and the
URLs to look at, then keeps running until Ctrl-C (or exits at once with --exit),
stopping the gateway, the worker and the stack it started. While it runs, a gateway or
worker that exits on its own (e.g. the worker losing the broker) is started again, at
most ``RESTARTS`` times in ``RESTART_WINDOW_S``; its log keeps the reason.

Platform secrets that are not set are generated for this run only. The sample history arrives
all at once, so the run sets ``PULSE_STREAM_IDLE_S`` to ``DEMO_STREAM_IDLE_S`` (unless it is set):
half a minute after the last delivery each community's stream time catches up with the present
and a community silent for 16 days shows as dead, instead of after the production default of
10 minutes."""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import Settings

HELP = "run the whole pipeline locally with sample deliveries and print the health report"

DEMO_STREAM_IDLE_S = 30

# a child that keeps dying is a fault to report, not to hide: give up after this many restarts
RESTARTS = 5
RESTART_WINDOW_S = 600.0

SECRET_VARIABLES = (
    "PULSE_GITHUB_WEBHOOK_SECRET",
    "PULSE_DISCOURSE_WEBHOOK_SECRET",
    "PULSE_SLACK_SIGNING_SECRET",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--communities", type=int, default=12, help="simulated communities (default 12)")
    parser.add_argument("--days", type=int, default=35, help="days of simulated history, ending now (default 35)")
    parser.add_argument("--exit", action="store_true", help="stop everything after printing the report")
    parser.add_argument(
        "--settle", type=float, default=120.0, help="seconds to wait for the worker to judge every community"
    )


def _say(text: str) -> None:
    print(f"pulse run: {text}", file=sys.stderr, flush=True)


def _pulse(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", *args]


def _communities_judged(api: str) -> int:
    import httpx

    with contextlib.suppress(httpx.HTTPError, ValueError):
        rows = httpx.get(api, timeout=5.0).json()
        return len(rows) if isinstance(rows, list) else 0
    return 0


@dataclass
class Child:
    """A server `pulse run` started and keeps running."""

    name: str
    argv: list[str]
    ready_url: str
    log_file: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)

    def start(self, timeout: float = 120.0) -> None:
        from pipeline.stack.process import spawn, wait_http

        self.process = spawn(self.argv, self.log_file, die_with_parent=True)
        wait_http(self.ready_url, timeout, self.process, self.log_file)

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def may_restart(self, now: float) -> bool:
        self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW_S]
        return len(self.restarts) < RESTARTS


def _supervise(children: list[Child]) -> int:
    """Keep the children running until one keeps dying; 1 then (Ctrl-C ends it from outside)."""
    from pipeline.stack.process import StackError, log_tail

    while True:
        time.sleep(1.0)
        for child in children:
            code = child.exited()
            if code is None:
                continue
            now = time.monotonic()
            if not child.may_restart(now):
                _say(f"{child.name} exited {RESTARTS} times in {RESTART_WINDOW_S:.0f} s; stopping. Last lines:")
                print(log_tail(child.log_file), file=sys.stderr)
                return 1
            child.restarts.append(now)
            _say(f"{child.name} exited with {code} (see {child.log_file}); starting it again")
            try:
                child.start()
            except StackError as exc:
                _say(str(exc))


def run(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.stack.process import StackError, terminate

    # children (stack, gateway, worker, simulate, report) inherit this environment
    for name in SECRET_VARIABLES:
        os.environ.setdefault(name, secrets.token_hex(16))
    os.environ.setdefault("PULSE_INGEST_TOKENS", "demo=" + secrets.token_hex(16))
    idle_s = int(os.environ.setdefault("PULSE_STREAM_IDLE_S", str(DEMO_STREAM_IDLE_S)))
    env = dict(os.environ)
    logs = settings.state_dir / "logs"
    children = [
        Child("worker", _pulse("worker"), f"http://{settings.worker_host}:{settings.worker_port}/healthz",
              logs / "worker.log"),
        Child("gateway", _pulse("gateway"), f"http://{settings.gateway_host}:{settings.gateway_port}/readyz",
              logs / "gateway.log"),
    ]

    def stop_all() -> None:
        for child in reversed(children):
            if child.process is not None:
                _say(f"stopping {child.name} (pid {child.process.pid})")
                terminate(child.process.pid, 30.0, child.process)
        subprocess.run(_pulse("stack", "down"), env=env, check=False)

    _say("starting the local stack (Kafka, Prometheus)")
    if subprocess.run(_pulse("stack", "up"), env=env, check=False).returncode != 0:
        _say("the stack did not start; see the messages above")
        return 1
    try:
        for child in children:
            _say(f"starting {child.name} (log {child.log_file})")
            child.start()
        gateway = f"http://{settings.gateway_host}:{settings.gateway_port}"
        _say(f"sending {args.days} days of deliveries for {args.communities} simulated communities")
        simulate = _pulse(
            "simulate", "--communities", str(args.communities), "--days", str(args.days), "--url", gateway
        )
        if subprocess.run(simulate, env=env, check=False).returncode != 0:
            _say("some deliveries were refused; see the summary above")
        api = f"http://{settings.worker_host}:{settings.worker_port}/api/communities"
        _say(f"waiting for the worker to judge every community (stream time catches up after {idle_s} s idle)")
        # the worker's tick (5 s), its flush and the sink's batch follow the idle time
        caught_up = time.monotonic() + idle_s + 15
        deadline = time.monotonic() + max(args.settle, idle_s + 30)
        while time.monotonic() < deadline and (
            time.monotonic() < caught_up or _communities_judged(api) < args.communities
        ):
            time.sleep(2.0)
        subprocess.run(_pulse("report"), env=env, check=False)
        prometheus = f"http://127.0.0.1:{settings.prometheus_port}"
        print(
            "\nLook at:\n"
            f"  gateway        {gateway}/openapi.json   (metrics: {gateway}/metrics)\n"
            f"  worker API     {api}\n"
            f"  worker metrics http://{settings.worker_host}:{settings.worker_port}/metrics\n"
            f"  Prometheus     {prometheus}/alerts\n"
            f"  logs           {logs}/\n"
        )
        if args.exit:
            return 0
        _say("running; press Ctrl-C to stop everything")
        return _supervise(children)
    except KeyboardInterrupt:
        return 0
    except StackError as exc:
        _say(str(exc))
        return 1
    finally:
        stop_all()
