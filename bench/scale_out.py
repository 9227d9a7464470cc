"""Scale-out: the same event load consumed by one worker and by two workers in one consumer group.

    .venv/bin/python bench/scale_out.py [--events 30000] [--communities 400] [--rounds 1] [--json PATH]

Starts a Kafka broker on free 127.0.0.1 ports. Per round and per configuration (1 worker, then
2 workers) a fresh topic prefix, so a fresh consumer group and empty state:

1. ``pulse worker --no-sink`` processes (each with its own state dir and web port) are started
   and the group settles: together they export consumer-lag series for all
   ``pipeline.topics.EVENT_PARTITIONS`` partitions, each worker for at least one;
2. ``--events`` canonical events over ``--communities`` communities (keyed by community, so
   spread over the partitions by Kafka's partitioner) are produced;
3. events/s = events / (time of the last one processed - time of the first), summed over the
   workers' /metrics (polled every ``--poll`` s, per-community series capped at 10 so a
   scrape stays cheap). Group joins are not timed; production is.

Prints events/s for one and two workers and the ratio, with each process's CPU use, so what
two cores allow can be read off. Everything it starts is stopped by pid.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import figures  # noqa: E402
from bench.harness import (  # noqa: E402
    Server,
    base_env,
    cpu_seconds,
    load_average,
    owned_partitions,
    processed,
    produce,
    scrape,
    start_broker,
    start_pulse,
    synthetic_records,
    wait_http,
)
from pipeline import topics  # noqa: E402
from pipeline.stack.process import free_port  # noqa: E402
from pipeline.stack.topics import create_topics  # noqa: E402


def run_config(bootstrap: str, broker_pid: int, n_workers: int, records: list[tuple[bytes, bytes]],
               workdir: Path, poll: float) -> dict[str, Any]:  # fmt: skip
    prefix = f"scale{n_workers}-{uuid.uuid4().hex[:6]}."
    create_topics(bootstrap, prefix)
    workers: list[Server] = []
    try:
        for w in range(n_workers):
            port = free_port()
            state = workdir / f"{prefix}w{w}"
            # few per-community series: a scrape renders them on the worker's loop, and is not what is measured
            env = base_env(bootstrap, prefix, state, PULSE_WORKER_PORT=str(port), PULSE_METRICS_MAX_COMMUNITIES="10")
            workers.append(start_pulse(f"worker {w}", ["worker", "--no-sink"], env, port, state / "worker.log"))
        for worker in workers:
            wait_http(worker, "/healthz")
        deadline = time.monotonic() + 180
        while True:
            owned = [owned_partitions(scrape(w.url), prefix) for w in workers]
            covered = set().union(*owned) == set(range(topics.EVENT_PARTITIONS))
            if covered and all(owned) and sum(len(o) for o in owned) == topics.EVENT_PARTITIONS:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"{n_workers} workers did not share the partitions: {owned}")
            time.sleep(0.5)
        cpu_before = {w.name: cpu_seconds(w.pid) for w in workers} | {"kafka": cpu_seconds(broker_pid)}
        wall_before = time.monotonic()
        produce(bootstrap, prefix + topics.EVENTS, records)
        produced_s = time.monotonic() - wall_before
        n = len(records)
        first_at: float | None = None
        first_done = 0.0
        deadline = time.monotonic() + 900
        while True:
            counts = [processed(scrape(w.url, timeout=2)) for w in workers]
            done = sum(max(0.0, c) for c in counts)
            now = time.monotonic()
            if first_at is None and done > 0:
                first_at, first_done = now, done
            if done >= n:
                break
            if now > deadline or not all(w.alive() for w in workers):
                raise SystemExit(f"{n_workers} workers stopped at {done:.0f}/{n} events; logs under {workdir}")
            time.sleep(poll)
        assert first_at is not None
        elapsed = now - first_at
        wall = now - wall_before
        cpu = {name: round((cpu_seconds(pid) - cpu_before[name]) / wall, 2)
               for name, pid in [(w.name, w.pid) for w in workers] + [("kafka", broker_pid)]}  # fmt: skip
        return {
            "workers": n_workers,
            "events_per_s": (n - first_done) / elapsed if elapsed > 0 else float("nan"),
            "elapsed_s": elapsed,
            "produce_s": produced_s,
            "per_worker_events": counts,
            "partitions": [sorted(o) for o in owned],
            "cpu_cores": cpu,
            "load_average": load_average(),
        }
    finally:
        for worker in workers:
            worker.stop()


def main(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="pulse-bench-scale-"))
    communities = [f"c{i}" for i in range(args.communities)]
    now_ms = int(time.time() * 1000)
    ids = [communities[i % len(communities)] for i in range(args.events)]
    records = synthetic_records(ids, now_ms, 6 * 3_600_000, seed=args.seed)
    results: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    broker = None
    try:
        print("scale_out: starting Kafka ...", file=sys.stderr, flush=True)
        broker = start_broker(workdir)
        assert broker.pid is not None
        for r in range(args.rounds):
            for n_workers in (1, 2):
                print(f"scale_out: round {r + 1}/{args.rounds}, {n_workers} worker(s), {len(records):,} events",
                      file=sys.stderr, flush=True)
                res = run_config(broker.bootstrap, broker.pid, n_workers, records, workdir, args.poll)
                results[n_workers].append(res)
                print(f"  {res['events_per_s']:,.0f} events/s in {res['elapsed_s']:.1f} s; per worker "
                      f"{res['per_worker_events']} on partitions {res['partitions']}; CPU cores {res['cpu_cores']}; "
                      f"load {res['load_average']}", file=sys.stderr, flush=True)
    finally:
        if broker is not None:
            broker.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    one = statistics.median(r["events_per_s"] for r in results[1])
    two = statistics.median(r["events_per_s"] for r in results[2])
    ratios = [b["events_per_s"] / a["events_per_s"] for a, b in zip(results[1], results[2], strict=True)]
    command = "python bench/scale_out.py " + " ".join(a for a in sys.argv[1:] if a != args.json and a != "--json")
    rep = figures.Report("scale_out", command.strip())
    rep.add(figures.Figure("one worker", round(one), "events/s"))
    rep.add(figures.Figure("two workers, one group", round(two), "events/s", "one worker", round(one)))
    rep.notes.append(f"{args.events:,} events over {args.communities} communities, "
                     f"{topics.EVENT_PARTITIONS} partitions, `pulse worker --no-sink`")  # fmt: skip
    for n_workers, runs in results.items():
        for res in runs:
            rep.notes.append(f"{n_workers} worker(s): {res['events_per_s']:,.0f} events/s, per worker "
                             f"{res['per_worker_events']}, CPU cores {res['cpu_cores']}, load {res['load_average']}")
    print(f"\nscale-out ({args.events:,} events, {args.communities} communities, "
          f"{topics.EVENT_PARTITIONS} partitions, median of {args.rounds} round(s))")
    print(f"  one worker               {one:>9,.0f} events/s")
    print(f"  two workers, one group   {two:>9,.0f} events/s")
    print(f"  two / one                {two / one:>9.2f}x   (per round: {', '.join(f'{x:.2f}' for x in ratios)})")
    figures.write(args.json, rep)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--communities", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=1, help="1 then 2 workers, this many times")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between scrapes of the workers' /metrics")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    parser.add_argument("--json", default=None, help="write the figures here (bench/figures.py)")
    sys.exit(main(parser.parse_args()))
