"""Many communities through the real worker: memory, RocksDB size, restart, idle evaluation.

    .venv/bin/python bench/many_communities.py [--communities 100000] [--sizes 10000,30000,100000] [--json PATH]

Starts a Kafka broker on free 127.0.0.1 ports. For each size N (default N/10, 3N/10 and N of
``--communities``), with a fresh topic prefix and state dir:

1. ``pulse worker --no-sink`` starts and owns every partition; its resident memory and CPU use
   over ``--idle-window`` seconds are the baseline (no community);
2. N communities get one event each, and ``--extra`` x N more events go to them with a Zipf
   (s = ``--zipf``) distribution: a few busy communities, a long tail of quiet ones. Event
   times are spread over the last two days, in time order. The worker processes them all;
3. once every community's health is known (sum of ``pulse_communities`` = N): resident memory
   (growth over the baseline, per community), and the worker's CPU over ``--idle-window`` seconds
   of no traffic: the worker ticks every partition every 5 s, and a tick advances (evaluates)
   every community of the partition, so CPU per 5 s minus the baseline is the cost of one
   evaluation pass over all N communities;
4. the worker is stopped (SIGTERM); the size of its state dir (RocksDB tables) is measured;
5. restart: ``--backlog`` new events are produced while it is down, then it is started again on
   the same state dir: seconds from the process start until it has processed them all
   ("restart to processing"), and until every community is evaluated again;
6. restore (at the largest size unless ``--restore-all``): the same with the RocksDB files
   deleted, so the state comes back from the Kafka changelog only (a worker on a new machine).

Everything it starts is stopped by pid. Figures only: a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import random
import shutil
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
    du_bytes,
    load_average,
    metric_sum,
    owned_partitions,
    processed,
    produce,
    rss_bytes,
    scrape,
    start_broker,
    start_pulse,
    synthetic_records,
    wait_http,
)
from pipeline import topics  # noqa: E402
from pipeline.stack.process import free_port  # noqa: E402
from pipeline.stack.topics import create_topics  # noqa: E402

MiB = 1024 * 1024
TICK_INTERVAL_S = 5.0  # pipeline.worker.app.TICK_INTERVAL_S
RESTART_TARGET_S = 30.0


def label(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def communities_with_activity(n: int, extra: float, zipf: float, seed: int) -> list[str]:
    """Community id per event: each of the n once, plus extra*n by a Zipf law over a random ranking."""
    rng = random.Random(seed)
    ids = [f"m{n}-{i}" for i in range(n)]
    ranked = ids[:]
    rng.shuffle(ranked)
    weights = [1 / (r + 1) ** zipf for r in range(n)]
    events = ids + rng.choices(ranked, weights, k=int(extra * n))
    rng.shuffle(events)
    return events


class Worker:
    def __init__(self, bootstrap: str, prefix: str, state: Path) -> None:
        self.port = free_port()
        self.env = base_env(bootstrap, prefix, state, PULSE_WORKER_PORT=str(self.port),
                            PULSE_METRICS_MAX_COMMUNITIES="100")  # fmt: skip
        self.state = state
        self.prefix = prefix
        self.server: Server | None = None
        self.starts = 0

    def start(self) -> Server:
        self.starts += 1
        self.server = start_pulse("worker", ["worker", "--no-sink"], self.env, self.port,
                                  self.state / f"worker-{self.starts}.log")  # fmt: skip
        return self.server

    @property
    def s(self) -> Server:
        assert self.server is not None
        return self.server

    def text(self) -> str | None:
        return scrape(self.s.url, timeout=10)

    def wait(self, what: str, done: Any, timeout: float, poll: float = 0.25) -> float:
        """Poll /metrics until ``done(text)``; seconds since the process started."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.s.alive():
                raise SystemExit(f"worker exited while waiting for {what}; log: {self.s.log_file}")
            text = self.text()
            if text is not None and done(text):
                return time.monotonic() - self.s.started_at
            time.sleep(poll)
        raise SystemExit(f"worker: no {what} after {timeout:.0f} s; log: {self.s.log_file}")

    def idle_cpu(self, seconds: float) -> float:
        """CPU seconds per second over ``seconds`` of no traffic."""
        before, started = cpu_seconds(self.s.pid), time.monotonic()
        time.sleep(seconds)
        return (cpu_seconds(self.s.pid) - before) / (time.monotonic() - started)


def known(text: str) -> float:
    return metric_sum(text, "pulse_communities")


def measure_size(bootstrap: str, n: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    prefix = f"many{n}-{uuid.uuid4().hex[:6]}."
    create_topics(bootstrap, prefix)
    worker = Worker(bootstrap, prefix, workdir / prefix)
    events_topic = prefix + topics.EVENTS
    out: dict[str, Any] = {"communities": n}

    def say(text: str) -> None:
        print(f"  [{label(n)}] {text}", file=sys.stderr, flush=True)

    try:
        worker.start()
        wait_http(worker.s, "/healthz")
        worker.wait("partitions", lambda t: len(owned_partitions(t, prefix)) == topics.EVENT_PARTITIONS, 180)
        time.sleep(3)
        out["rss_empty_mib"] = rss_bytes(worker.s.pid) / MiB
        out["idle_cpu_empty"] = worker.idle_cpu(args.idle_window)
        say(f"empty worker: {out['rss_empty_mib']:.0f} MiB, idle CPU {out['idle_cpu_empty']:.3f} cores")

        ids = communities_with_activity(n, args.extra, args.zipf, args.seed)
        now_ms = int(time.time() * 1000)
        records = synthetic_records(ids, now_ms - 60_000, 2 * 86_400_000, seed=args.seed)
        started = time.monotonic()
        produce(bootstrap, events_topic, records)
        say(f"produced {len(records):,} events in {time.monotonic() - started:.1f} s; processing ...")
        first = time.monotonic()
        worker.wait("processing", lambda t: processed(t) >= len(records), args.timeout, poll=1.0)
        out["events"] = len(records)
        out["processing_events_per_s"] = len(records) / (time.monotonic() - first)
        worker.wait("evaluation of every community", lambda t: known(t) >= n, 300, poll=1.0)
        time.sleep(6)
        out["rss_mib"] = rss_bytes(worker.s.pid) / MiB
        out["memory_per_community_kib"] = (out["rss_mib"] - out["rss_empty_mib"]) * 1024 / n
        out["idle_cpu"] = worker.idle_cpu(args.idle_window)
        out["pass_cpu_s"] = max(0.0, out["idle_cpu"] - out["idle_cpu_empty"]) * TICK_INTERVAL_S
        say(f"{out['processing_events_per_s']:,.0f} events/s; RSS {out['rss_mib']:.0f} MiB "
            f"({out['memory_per_community_kib']:.1f} KiB/community); idle CPU {out['idle_cpu']:.2f} cores "
            f"-> {out['pass_cpu_s']:.2f} CPU s per evaluation pass")  # fmt: skip

        stopping = time.monotonic()
        worker.s.stop(60)
        out["stop_s"] = time.monotonic() - stopping
        out["state_dir_mib"] = du_bytes(worker.state / "worker") / MiB
        out["state_bytes_per_community"] = out["state_dir_mib"] * MiB / n
        say(f"stopped in {out['stop_s']:.1f} s; state dir {out['state_dir_mib']:.1f} MiB")

        for phase in ("restart", "restore"):
            if phase == "restore":
                if args.no_restore or (n != args.largest and not args.restore_all):
                    break  # the changelog restore is timed at the largest size only, unless asked
                worker.s.stop(60)
                shutil.rmtree(worker.state / "worker", ignore_errors=True)
                (worker.state / "worker").mkdir(parents=True)
            backlog = [ids[i % len(ids)] for i in range(args.backlog)]
            produce(bootstrap, events_topic,
                    synthetic_records(backlog, int(time.time() * 1000), 1000, seed=args.seed + worker.starts))
            worker.start()
            out[f"{phase}_http_s"] = worker.wait("web server", lambda t: True, args.timeout, poll=0.1)
            out[f"{phase}_processing_s"] = worker.wait("backlog", lambda t: processed(t) >= args.backlog,
                                                       args.timeout, poll=0.2)  # fmt: skip
            out[f"{phase}_all_evaluated_s"] = worker.wait("every community", lambda t: known(t) >= n,
                                                          args.timeout, poll=0.5)  # fmt: skip
            time.sleep(3)
            out[f"{phase}_rss_mib"] = rss_bytes(worker.s.pid) / MiB
            say(f"{phase}: web up {out[f'{phase}_http_s']:.1f} s, backlog of {args.backlog} processed "
                f"{out[f'{phase}_processing_s']:.1f} s, every community evaluated "
                f"{out[f'{phase}_all_evaluated_s']:.1f} s after start; RSS {out[f'{phase}_rss_mib']:.0f} MiB")
        out["load_average"] = load_average()
        return out
    finally:
        if worker.server is not None:
            worker.s.stop(60)


def report(results: list[dict[str, Any]], command: str) -> figures.Report:
    rep = figures.Report("many_communities", command)
    smallest = results[0]
    largest = results[-1]
    for r in results:
        n = label(r["communities"])
        rep.add(figures.Figure(f"{n}: worker resident memory", round(r["rss_mib"], 1), "MiB",
                               "empty worker", round(r["rss_empty_mib"], 1)))  # fmt: skip
        per = r["memory_per_community_kib"]
        if r is smallest:
            rep.add(figures.Figure(f"{n}: memory per community", round(per, 2), "KiB"))
        else:
            rep.add(figures.Figure(f"{n}: memory per community", round(per, 2), "KiB",
                                   f"{label(smallest['communities'])}: memory per community",
                                   round(smallest["memory_per_community_kib"], 2),
                                   "at most linear: <= 1.25x the smallest size's",
                                   per <= 1.25 * smallest["memory_per_community_kib"]))  # fmt: skip
        rep.add(figures.Figure(f"{n}: state dir (RocksDB) per community", round(r["state_bytes_per_community"]),
                               "bytes"))  # fmt: skip
        rep.add(figures.Figure(f"{n}: CPU of one evaluation pass over every community", round(r["pass_cpu_s"], 3),
                               "CPU s", "tick interval (s)", TICK_INTERVAL_S,
                               "< 5 s (one tick interval)", r["pass_cpu_s"] < TICK_INTERVAL_S))  # fmt: skip
        for phase in ("restart", "restore"):
            if f"{phase}_processing_s" not in r:
                continue
            what = "restart to processing" if phase == "restart" else "restore from changelog to processing"
            met = r[f"{phase}_processing_s"] < RESTART_TARGET_S if (r is largest and phase == "restart") else None
            rep.add(figures.Figure(f"{n}: {what}", round(r[f"{phase}_processing_s"], 1), "s", None, None,
                                   "< 30 s at 100k" if met is not None else None, met))  # fmt: skip
            rep.add(figures.Figure(f"{n}: {phase} to every community evaluated",
                                   round(r[f"{phase}_all_evaluated_s"], 1), "s"))  # fmt: skip
        rep.add(figures.Figure(f"{n}: processing rate (new communities)", round(r["processing_events_per_s"]),
                               "events/s"))  # fmt: skip
        rep.notes.append(f"{n}: {r['events']:,} events, load average {r['load_average']}, stop {r['stop_s']:.1f} s, "
                         f"state dir {r['state_dir_mib']:.1f} MiB, idle CPU {r['idle_cpu']:.3f} cores "
                         f"(empty {r['idle_cpu_empty']:.3f})")  # fmt: skip
    return rep


def main(args: argparse.Namespace) -> int:
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else sorted(
        {max(1, args.communities // 10), max(1, 3 * args.communities // 10), args.communities})
    args.largest = max(sizes)
    workdir = Path(tempfile.mkdtemp(prefix="pulse-bench-many-"))
    results = []
    broker = None
    try:
        print("many_communities: starting Kafka ...", file=sys.stderr, flush=True)
        broker = start_broker(workdir)
        for n in sizes:
            print(f"many_communities: {n:,} communities", file=sys.stderr, flush=True)
            results.append(measure_size(broker.bootstrap, n, args, workdir))
    finally:
        if broker is not None:
            broker.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    command = "python bench/many_communities.py " + " ".join(a for a in sys.argv[1:] if a not in (args.json, "--json"))
    rep = report(results, command.strip())
    print("\nmany communities (pulse worker --no-sink)")
    for f in rep.figures:
        base = f"  (vs {f.baseline}: {f.baseline_value})" if f.baseline else ""
        met = "" if f.met is None else ("  target met" if f.met else "  target MISSED")
        print(f"  {f.name:<62} {f.value:>10,.2f} {f.unit}{base}{met}")
    figures.write(args.json, rep)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--communities", type=int, default=100_000, help="largest size (default 100,000)")
    parser.add_argument("--sizes", default=None, help="comma list of sizes (default: N/10, 3N/10, N)")
    parser.add_argument("--extra", type=float, default=0.2, help="extra events per community, Zipf-distributed (0.2)")
    parser.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent of the extra events (default 1.1)")
    parser.add_argument("--backlog", type=int, default=200, help="events produced while the worker is down")
    parser.add_argument("--idle-window", type=float, default=15.0, help="seconds of idle CPU measurement")
    parser.add_argument("--timeout", type=float, default=900.0, help="most seconds for any one wait")
    parser.add_argument("--no-restore", action="store_true", help="skip the restore-from-changelog phase")
    parser.add_argument("--restore-all", action="store_true", help="time the restore at every size, not the largest")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    parser.add_argument("--json", default=None, help="write the figures here (bench/figures.py)")
    sys.exit(main(parser.parse_args()))
