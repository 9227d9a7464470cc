"""Run every benchmark under bench/ several times and write docs/benchmarks.md (``make bench``).

    .venv/bin/python -m bench.run_all                      # everything, default runs and sizes
    .venv/bin/python -m bench.run_all --only sink_throughput --runs 2
    .venv/bin/python -m bench.run_all --args e2e_freshness="--rates 1000,500 --seconds 30"
    .venv/bin/python -m bench.run_all --from-cache           # rewrite the document only (notes edited)

Each script runs as its own process with ``--json FILE`` (bench/figures.py) and its output in a
log under .pulse/bench/logs/. Per benchmark the document shows the median of each figure over the
runs, the median of its same-run baseline and the median of the per-run ratios, the target and in
how many runs it was met, the command to reproduce, and the hand-written bench/notes/<area>.md.

Runs: ``--runs N`` for every benchmark; without it each benchmark has its own default (3, or 1 for
the long end-to-end ones) so that the whole pass stays around 20 minutes on two cores. With
``--only``, the other benchmarks' sections come from their last results (.pulse/bench/results/),
marked with their date. A script that fails is reported in the document and in the exit status;
a script without ``--json`` support is listed as "no figures". soak.py and reliability_report.py
are not speed benchmarks and are not run (see the document).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
NOTES = BENCH / "notes"
OUTPUT = ROOT / "docs" / "benchmarks.md"
CACHE = ROOT / ".pulse" / "bench"


@dataclass(frozen=True)
class Benchmark:
    name: str  # script bench/<name>.py
    title: str
    notes: str  # bench/notes/<notes>
    runs: int = 3
    args: tuple[str, ...] = ()
    timeout_s: float = 1200.0


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("gateway_throughput", "Gateway: accepted deliveries per second and latency", "gateway.md"),
    Benchmark(
        "worker_throughput",
        "Worker: events per second through dedupe, windows and health",
        "worker.md",
        runs=2,
        # the state-size part at 100k takes minutes; many_communities measures 100k through the worker
        args=("--events", "20000", "--rounds", "1", "--state-communities", "10000"),
    ),
    Benchmark(
        "sink_throughput",
        "ClickHouse sink: rows per second",
        "sink.md",
        runs=2,
        args=("--rows", "40000", "--rounds", "1"),
    ),
    Benchmark("core_engine", "Pure core: engine per event", "core.md"),
    # the end-to-end ones take minutes each: one run by default
    Benchmark(
        "e2e_freshness",
        "End to end: webhook to metrics and to ClickHouse",
        "e2e.md",
        runs=1,
        # 3 minutes a level: 30 s levels hid a worker that falls behind in minute 3 at 1,000/s
        args=("--rates", "1000,300", "--seconds", "180", "--trend", "60"),
        timeout_s=1800,
    ),
    Benchmark(
        "scale_out",
        "Scale-out: one worker and two workers in one group",
        "scale_out.md",
        runs=1,
        args=("--events", "20000"),
    ),
    Benchmark(
        "many_communities",
        "Many communities: memory, RocksDB, restart, evaluation",
        "many_communities.md",
        runs=1,
        args=("--communities", "100000"),
        timeout_s=2400,
    ),
)

NOT_SPEED: dict[str, str] = {
    "soak": "steady traffic for a chosen time, printing RSS and consumer lag per interval: a leak and "
    "stability check that needs tens of minutes, not a speed figure (`python bench/soak.py --minutes 30`).",
    "reliability_report": "runs the fault suite (tests/faults) and writes docs/reliability.md: what was "
    "accepted and what landed under each fault, not a speed figure (`python bench/reliability_report.py`).",
}
HELPERS = {"figures", "harness", "run_all"}

PACKAGES = ("chdb", "clickhouse-connect", "kafka-python", "aiokafka", "faust-streaming", "starlette", "uvicorn",
            "pydantic", "prometheus-client", "python-rocksdb", "rocksdict")  # fmt: skip


# ---------------------------------------------------------------- the pure part: figures -> table


@dataclass(frozen=True)
class Row:
    """One figure over the runs of a benchmark."""

    name: str
    unit: str
    value: float  # median over the runs that measured it
    runs: int
    baseline: str | None = None
    baseline_value: float | None = None  # median
    ratio: float | None = None  # median of the per-run ratios (each against its own run's baseline)
    target: str | None = None
    met: int = 0  # runs in which the target was met
    judged: int = 0  # runs that said whether it was met


def aggregate(runs: Sequence[dict[str, Any]]) -> list[Row]:
    """Per figure name (in order of first appearance): medians over the runs' JSON payloads."""
    order: list[str] = []
    by_name: dict[str, list[dict[str, Any]]] = {}
    for payload in runs:
        for fig in payload.get("figures", []):
            if fig["name"] not in by_name:
                order.append(fig["name"])
                by_name[fig["name"]] = []
            by_name[fig["name"]].append(fig)
    rows = []
    for name in order:
        figs = by_name[name]
        baselines = [f["baseline_value"] for f in figs if f.get("baseline_value") is not None]
        ratios = [f["value"] / f["baseline_value"] for f in figs if f.get("baseline_value") not in (None, 0)]
        judged = [f["met"] for f in figs if f.get("met") is not None]
        rows.append(
            Row(
                name=name,
                unit=figs[-1].get("unit", ""),
                value=statistics.median(f["value"] for f in figs),
                runs=len(figs),
                baseline=next((f["baseline"] for f in figs if f.get("baseline")), None),
                baseline_value=statistics.median(baselines) if baselines else None,
                ratio=statistics.median(ratios) if ratios else None,
                target=next((f["target"] for f in figs if f.get("target")), None),
                met=sum(1 for m in judged if m),
                judged=len(judged),
            )
        )
    return rows


def number(value: float | None) -> str:
    """A figure as a reader wants it: thousands separators, few decimals."""
    if value is None:
        return ""
    if value != value:  # NaN
        return "n/a"
    magnitude = abs(value)
    if magnitude >= 100 or value == int(value):
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:,.1f}"
    if magnitude >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def ratio_text(ratio: float | None) -> str:
    """A percentage up to 10x (e.g. 51 %), a multiple beyond."""
    if ratio is None:
        return ""
    return f"{ratio:.0%}" if -10 < ratio < 10 else f"{ratio:,.1f}x"


def verdict(row: Row) -> str:
    if not row.judged:
        return ""
    if row.met == row.judged:
        word = "**met**"
    elif row.met == 0:
        word = "**missed**"
    else:
        word = "**partly**"
    return f"{word} ({row.met}/{row.judged})"


def table(rows: Sequence[Row]) -> str:
    lines = [
        "| figure | median | unit | baseline (same run) | baseline median | ratio (median) | target | met |",
        "|---|---:|---|---|---:|---:|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {number(r.value)} | {r.unit} | {r.baseline or ''} | {number(r.baseline_value)} "
            f"| {ratio_text(r.ratio)} | {r.target or ''} | {verdict(r)} |"
        )
    return "\n".join(lines)


@dataclass
class RunOutcome:
    run: int
    seconds: float
    exit_code: int | None  # None: not started
    payload: dict[str, Any] | None = None
    log: str = ""  # log path
    error: str = ""  # tail of the log when it failed


@dataclass
class Section:
    bench: Benchmark
    status: str  # ok | failed | no-json | missing | not-run
    command: str
    outcomes: list[RunOutcome] = field(default_factory=list)
    when: str = ""  # UTC time of the pass that produced it

    @property
    def payloads(self) -> list[dict[str, Any]]:
        return [o.payload for o in self.outcomes if o.payload is not None]


def render_section(section: Section, notes_text: str | None) -> str:
    b = section.bench
    out = [f"## {b.title}", ""]
    out.append(f"Reproduce: `{section.command}`" + (f" (figures measured {section.when})" if section.when else ""))
    out.append("")
    payloads = section.payloads
    failed = [o for o in section.outcomes if o.exit_code not in (0, None)]
    if section.status == "no-json":
        out += [f"No figures (script has no --json): `bench/{b.name}.py` does not write bench/figures.py JSON yet.", ""]
    elif section.status == "missing":
        out += [f"No figures: `bench/{b.name}.py` does not exist.", ""]
    elif section.status == "not-run":
        out += ["Not run in this pass and no earlier results.", ""]
    if payloads:
        loads = [p.get("machine", {}).get("load_average_1m") for p in payloads]
        loads = [x for x in loads if x is not None]
        seconds = [o.seconds for o in section.outcomes if o.payload is not None]
        out.append(
            f"Median of {len(payloads)} run(s)"
            + (f", load average {min(loads):.1f} to {max(loads):.1f} at the end of the runs" if loads else "")
            + (f", {statistics.median(seconds):.0f} s per run" if seconds else "")
            + ". Ratio = figure / baseline, each run against its own baseline."
        )
        out += ["", table(aggregate(payloads)), ""]
        details = []
        for o in section.outcomes:
            if o.payload and o.payload.get("notes"):
                details.append(f"- run {o.run}: " + "; ".join(o.payload["notes"]))
        if details:
            out += ["<details><summary>Parameters and per-run details</summary>", "", *details, "", "</details>", ""]
    for o in failed:
        out += [f"**Run {o.run} failed** (exit {o.exit_code}, after {o.seconds:.0f} s; log `{o.log}`):", "",
                "```", o.error.rstrip(), "```", ""]  # fmt: skip
    if notes_text is None:
        out += [f"_No notes yet (bench/notes/{b.notes})._", ""]
    elif notes_text.strip():
        out += [notes_text.strip(), ""]
    return "\n".join(out)


def render(environment: dict[str, Any], sections: Sequence[Section], notes: dict[str, str | None],
           total_s: float, argv: Sequence[str]) -> str:  # fmt: skip
    env = environment
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    out = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python -m bench.run_all"
        + (" " + " ".join(shlex.quote(a) for a in argv) if argv else "")
        + f"`) on {env['date']} in {total_s / 60:.1f} min. Do not edit by hand: the narrative of each "
        "area lives in bench/notes/<area>.md and is included below its figures.",
        "",
        f"- Machine: {env['cpus']} CPUs ({env['cpu_model']}), {env['ram_gib']:.1f} GiB RAM, {env['os']}",
        f"- Load average when the pass started: {env['load_average']}",
        f"- Versions: Python {env['python']}, Kafka {env['kafka']}, Java {env['java']}; {versions}",
        "",
        "Every figure is measured against a baseline **in the same run** where one makes sense, so a "
        "ratio never compares two moments of a loaded machine; the tables show medians over the runs. "
        "Broker, servers and load generators share the same two cores, so absolute rates are lower "
        "than on a dedicated machine. No figure is asserted by a test.",
        "",
    ]
    summary = []
    for s in sections:
        rows = aggregate(s.payloads)
        judged = [r for r in rows if r.judged]
        state = {"ok": "ok", "failed": "**failed**", "no-json": "no figures (script has no --json)",
                 "missing": "missing", "not-run": "not run"}[s.status]  # fmt: skip
        targets = ", ".join(f"{r.name}: {'met' if r.met * 2 > r.judged else 'missed'}" for r in judged)
        summary.append(f"| [{s.bench.name}](#{anchor(s.bench.title)}) | {state} | {len(s.payloads)} | {targets} |")
    out += ["| benchmark | status | runs | targets |", "|---|---|---|---|", *summary, ""]
    for s in sections:
        out.append(render_section(s, notes.get(s.bench.name)))
    out += [
        "## Not run by `make bench`",
        "",
        *(f"- `bench/{name}.py`: {text}" for name, text in NOT_SPEED.items()),
        "",
    ]
    return "\n".join(out)


def anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


# ---------------------------------------------------------------- the imperative part


def environment() -> dict[str, Any]:
    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    os_name = platform.platform()
    try:
        release = dict(
            line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line
        )
        os_name = f"{release.get('PRETTY_NAME', '').strip(chr(34))}, Linux {platform.release()}"
    except OSError:
        pass
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "ram_gib": ram,
        "os": os_name,
        "python": platform.python_version(),
        "kafka": kafka_version(),
        "java": java_version(),
        "versions": versions,
        "load_average": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def kafka_version() -> str:
    """The broker version the benchmarks start: from the pom, checked against the jar cache."""
    try:
        sys.path.insert(0, str(ROOT))
        from pipeline.stack.kafka import cache_dir
        from pipeline.stack.kafka import kafka_version as pom_version

        version = pom_version()
        jars = sorted((cache_dir(version) / "libs").glob("kafka_2.13-*.jar"))
        return version + ("" if jars else " (jars not cached yet)")
    except Exception as exc:  # the document still gets written
        return f"unknown ({type(exc).__name__})"


def java_version() -> str:
    try:
        out = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    match = re.search(r'version "([^"]+)"', out.stderr + out.stdout)
    return match.group(1) if match else "unknown"


def supports_json(script: Path) -> bool:
    # read, not run: a script without argparse (core_engine.py) would take "--json" for an argument
    return "--json" in script.read_text()


def fmt_duration(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def run_once(bench: Benchmark, args: Sequence[str], run: int, runs: int, index: str, log_dir: Path,
             pass_started: float) -> RunOutcome:  # fmt: skip
    script = BENCH / f"{bench.name}.py"
    log = log_dir / f"{bench.name}-{run}.log"
    with tempfile.NamedTemporaryFile(prefix=f"bench-{bench.name}-", suffix=".json", delete=False) as tmp:
        json_path = Path(tmp.name)
    json_path.unlink()
    command = [sys.executable, str(script), *args, "--json", str(json_path)]
    started = time.monotonic()
    print(f"{index} {bench.name} run {run}/{runs}: {' '.join(args) or '(defaults)'}", file=sys.stderr, flush=True)
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        next_report = started + 30
        while process.poll() is None:
            now = time.monotonic()
            if now - started > bench.timeout_s:
                stop(process)
                break
            if now >= next_report:
                print(f"    ... {bench.name} run {run}/{runs} running for {fmt_duration(now - started)} "
                      f"(pass {fmt_duration(now - pass_started)}, load {os.getloadavg()[0]:.1f})",
                      file=sys.stderr, flush=True)  # fmt: skip
                next_report = now + 30
            time.sleep(0.5)
    seconds = time.monotonic() - started
    code = process.returncode
    if seconds > bench.timeout_s and code != 0:
        code = code if code not in (None, 0) else -1
    payload = None
    if code == 0:
        try:
            payload = json.loads(json_path.read_text())
        except (OSError, ValueError):
            code = -2  # ended "successfully" without figures: report it as a failure
    json_path.unlink(missing_ok=True)
    error = "" if code == 0 else tail(log, 15, timed_out=seconds > bench.timeout_s, timeout_s=bench.timeout_s)
    state = "ok" if code == 0 else f"FAILED (exit {code})"
    print(f"    {bench.name} run {run}/{runs}: {state} in {fmt_duration(seconds)}"
          + (f", {len(payload['figures'])} figures" if payload else f"; log {log}"), file=sys.stderr, flush=True)
    return RunOutcome(run, seconds, code, payload, str(log.relative_to(ROOT)) if log.is_relative_to(ROOT) else str(log),
                      error)  # fmt: skip


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGINT first (the script's finally blocks stop its servers), SIGKILL after 60 s."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def tail(log: Path, lines: int, *, timed_out: bool = False, timeout_s: float = 0) -> str:
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        text = []
    head = [f"(stopped after the {timeout_s:.0f} s time limit)"] if timed_out else []
    return "\n".join(head + text[-lines:])


def save(section: Section) -> None:
    (CACHE / "results").mkdir(parents=True, exist_ok=True)
    data = {"status": section.status, "command": section.command, "when": section.when,
            "outcomes": [asdict(o) for o in section.outcomes]}  # fmt: skip
    (CACHE / "results" / f"{section.bench.name}.json").write_text(json.dumps(data, indent=1) + "\n")


def cached(bench: Benchmark) -> Section | None:
    path = CACHE / "results" / f"{bench.name}.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    outcomes = [RunOutcome(**o) for o in data["outcomes"]]
    return Section(bench, data["status"], data["command"], outcomes, data.get("when", ""))


def parse_overrides(items: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """``NAME=ARGS`` -> {NAME: split ARGS}; ARGS replaces the benchmark's default arguments."""
    known = {b.name for b in BENCHMARKS}
    out = {}
    for item in items:
        name, sep, rest = item.partition("=")
        if not sep or name not in known:
            raise SystemExit(f"--args wants NAME=ARGS with NAME one of {', '.join(sorted(known))}; got {item!r}")
        out[name] = tuple(shlex.split(rest))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only this benchmark (repeatable, or comma-separated)")  # fmt: skip
    parser.add_argument("--runs", type=int, default=None, help="runs of every benchmark (default: each its own)")
    parser.add_argument("--args", action="append", default=[], metavar="NAME=ARGS",
                        help="replace a benchmark's default arguments, e.g. scale_out='--events 10000'")  # fmt: skip
    parser.add_argument("--output", type=Path, default=OUTPUT, help="where to write (default docs/benchmarks.md)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and their defaults, run nothing")
    parser.add_argument("--from-cache", action="store_true",
                        help="run nothing: rewrite the document from the last results")  # fmt: skip
    args = parser.parse_args(argv)
    argv_shown = list(sys.argv[1:] if argv is None else argv)
    only = {n.strip() for item in args.only for n in item.split(",") if n.strip()}
    known = {b.name for b in BENCHMARKS}
    if only - known:
        parser.error(f"unknown benchmark(s) {', '.join(sorted(only - known))}; known: {', '.join(sorted(known))}")
    overrides = parse_overrides(args.args)
    if args.list:
        for b in BENCHMARKS:
            print(f"{b.name:<20} runs {b.runs}  args {' '.join(b.args) or '(none)'}  timeout {b.timeout_s:.0f} s")
        return 0
    listed = known | HELPERS | set(NOT_SPEED)
    unknown_scripts = sorted(p.stem for p in BENCH.glob("*.py") if p.stem not in listed and not p.stem.startswith("_"))
    if unknown_scripts:
        print(f"note: bench scripts not in run_all's list (not run): {', '.join(unknown_scripts)}", file=sys.stderr)

    env = environment()
    print(f"make bench: {env['cpus']} CPUs ({env['cpu_model']}), load {env['load_average']}", file=sys.stderr)
    log_dir = CACHE / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    pass_started = time.monotonic()
    sections: list[Section] = []
    selected = [] if args.from_cache else [b for b in BENCHMARKS if not only or b.name in only]
    for bench in BENCHMARKS:
        script = BENCH / f"{bench.name}.py"
        bench_args = overrides.get(bench.name, bench.args)
        command = " ".join(["python", f"bench/{bench.name}.py", *map(shlex.quote, bench_args)])
        if bench not in selected:
            sections.append(cached(bench) or Section(bench, "not-run", command))
            continue
        index = f"[{selected.index(bench) + 1}/{len(selected)}]"
        if not script.exists():
            section = Section(bench, "missing", command)
        elif not supports_json(script):
            print(f"{index} {bench.name}: no figures (script has no --json); not run", file=sys.stderr, flush=True)
            section = Section(bench, "no-json", command)
        else:
            runs = args.runs or bench.runs
            outcomes = [run_once(bench, bench_args, r, runs, index, log_dir, pass_started) for r in range(1, runs + 1)]
            failed = any(o.exit_code != 0 for o in outcomes)
            section = Section(bench, "failed" if failed else "ok", command, outcomes)
        section.when = env["date"]
        save(section)
        sections.append(section)
    notes: dict[str, str | None] = {}
    for bench in BENCHMARKS:
        path = NOTES / bench.notes
        notes[bench.name] = path.read_text() if path.exists() else None
    total = time.monotonic() - pass_started
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(env, sections, notes, total, argv_shown))
    failed_names = [s.bench.name for s in sections if s.status == "failed" and s.bench in selected]
    print(f"wrote {args.output} in {fmt_duration(total)}"
          + (f"; FAILED: {', '.join(failed_names)}" if failed_names else ""), file=sys.stderr)  # fmt: skip
    return 1 if failed_names else 0


if __name__ == "__main__":
    sys.exit(main())
