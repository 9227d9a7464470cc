"""The whole pipeline on this machine, on the embedded defaults.

Starts the local stack (Kafka, and Prometheus when installed), the gateway and the
worker (with the embedded ClickHouse), sends sample deliveries through the gateway
(simulated communities of every behaviour, in each platform's own signed format),
waits until the worker has judged them, prints the community health report and the
URLs to look at, then keeps running until Ctrl-C (or exits at once with --exit),
stopping the gateway, the worker and the stack it started.

Platform secrets that are not set are generated for this run only."""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

from pipeline.config import Settings

HELP = "run the whole pipeline locally with sample deliveries and print the health report"

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


def _wait_http(url: str, timeout: float, process: subprocess.Popen[bytes], log_file: Path) -> None:
    import httpx

    from pipeline.stack.process import log_tail

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{log_file.stem} exited with {process.returncode}:\n{log_tail(log_file)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s:\n{log_tail(log_file)}")


def _communities_judged(api: str) -> int:
    import httpx

    with contextlib.suppress(httpx.HTTPError, ValueError):
        rows = httpx.get(api, timeout=5.0).json()
        return len(rows) if isinstance(rows, list) else 0
    return 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.stack.process import spawn, terminate

    # children (stack, gateway, worker, simulate, report) inherit this environment
    for name in SECRET_VARIABLES:
        os.environ.setdefault(name, secrets.token_hex(16))
    os.environ.setdefault("PULSE_INGEST_TOKENS", "demo=" + secrets.token_hex(16))
    env = dict(os.environ)
    logs = settings.state_dir / "logs"
    started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def stop_all() -> None:
        for name, process in reversed(started):
            _say(f"stopping {name} (pid {process.pid})")
            terminate(process.pid, 30.0, process)
        subprocess.run(_pulse("stack", "down"), env=env, check=False)

    _say("starting the local stack (Kafka, Prometheus)")
    if subprocess.run(_pulse("stack", "up"), env=env, check=False).returncode != 0:
        _say("the stack did not start; see the messages above")
        return 1
    try:
        for name, argv, url in (
            ("worker", _pulse("worker"), f"http://{settings.worker_host}:{settings.worker_port}/healthz"),
            ("gateway", _pulse("gateway"), f"http://{settings.gateway_host}:{settings.gateway_port}/readyz"),
        ):
            log_file = logs / f"{name}.log"
            _say(f"starting {name} (log {log_file})")
            process = spawn(argv, log_file, die_with_parent=True)
            started.append((name, process))
            _wait_http(url, 120.0, process, log_file)
        gateway = f"http://{settings.gateway_host}:{settings.gateway_port}"
        _say(f"sending {args.days} days of deliveries for {args.communities} simulated communities")
        simulate = _pulse(
            "simulate", "--communities", str(args.communities), "--days", str(args.days), "--url", gateway
        )
        if subprocess.run(simulate, env=env, check=False).returncode != 0:
            _say("some deliveries were refused; see the summary above")
        api = f"http://{settings.worker_host}:{settings.worker_port}/api/communities"
        _say("waiting for the worker to judge every community")
        deadline = time.monotonic() + args.settle
        while _communities_judged(api) < args.communities and time.monotonic() < deadline:
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
        while all(p.poll() is None for _, p in started):
            time.sleep(1.0)
        _say("a process exited; stopping")
        return 1
    except KeyboardInterrupt:
        return 0
    except RuntimeError as exc:
        _say(str(exc))
        return 1
    finally:
        stop_all()
