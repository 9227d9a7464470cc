"""The pure parts of bench/run_all.py: medians over runs, ratios, verdicts and the rendered document."""

from __future__ import annotations

import statistics
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from bench import figures
from bench.run_all import (
    BENCHMARKS,
    NOT_SPEED,
    Benchmark,
    RunOutcome,
    Section,
    aggregate,
    anchor,
    number,
    parse_overrides,
    ratio_text,
    render,
    render_section,
    supports_json,
    verdict,
)


def payload(*figs: figures.Figure, load: float = 1.0, notes: list[str] | None = None) -> dict[str, Any]:
    return {
        "benchmark": "x",
        "command": "python bench/x.py",
        "machine": {"cpus": 2, "load_average_1m": load},
        "notes": notes or [],
        "figures": [f.__dict__ | {"ratio": f.ratio} for f in figs],
    }


def fig(value: float, baseline: float | None = None, met: bool | None = None, name: str = "rate") -> figures.Figure:
    return figures.Figure(name, value, "events/s", "bare" if baseline is not None else None, baseline,
                          ">= 50 % of bare" if met is not None else None, met)  # fmt: skip


def test_median_of_values_and_baselines_and_of_per_run_ratios() -> None:
    rows = aggregate([payload(fig(50, 100, True)), payload(fig(30, 100, False)), payload(fig(90, 120, True))])
    assert len(rows) == 1
    row = rows[0]
    assert row.value == 50
    assert row.baseline_value == 100
    # the median of 0.5, 0.3, 0.75: each run against its own baseline, not median/median
    assert row.ratio == 0.5
    assert (row.met, row.judged, row.runs) == (2, 3, 3)
    assert row.baseline == "bare"
    assert row.target == ">= 50 % of bare"


def test_figures_keep_the_order_of_first_appearance_and_a_figure_missing_from_a_run() -> None:
    rows = aggregate([payload(fig(1, name="b"), fig(2, name="a")), payload(fig(3, name="a"), fig(4, name="c"))])
    assert [r.name for r in rows] == ["b", "a", "c"]
    assert {r.name: r.runs for r in rows} == {"b": 1, "a": 2, "c": 1}
    assert {r.name: r.value for r in rows}["a"] == 2.5


def test_zero_or_missing_baseline_gives_no_ratio() -> None:
    rows = aggregate([payload(fig(5, 0)), payload(fig(7))])
    assert rows[0].ratio is None
    assert rows[0].baseline_value == 0


@given(st.lists(st.floats(min_value=0.001, max_value=1e6), min_size=1, max_size=7))
def test_the_median_is_statistics_median(values: list[float]) -> None:
    rows = aggregate([payload(fig(v)) for v in values])
    assert rows[0].value == statistics.median(values)


def test_verdicts() -> None:
    rows = aggregate([payload(fig(1, 1, True)), payload(fig(1, 1, True))])
    assert verdict(rows[0]) == "**met** (2/2)"
    rows = aggregate([payload(fig(1, 1, False)), payload(fig(1, 1, True))])
    assert verdict(rows[0]) == "**partly** (1/2)"
    rows = aggregate([payload(fig(1, 1, False))])
    assert verdict(rows[0]) == "**missed** (0/1)"
    assert verdict(aggregate([payload(fig(1))])[0]) == ""


def test_numbers_and_ratios_read_well() -> None:
    assert number(1234567.8) == "1,234,568"
    assert number(12.345) == "12.3"
    assert number(0.5) == "0.50"
    assert number(0.01234) == "0.0123"
    assert number(None) == ""
    assert number(float("nan")) == "n/a"
    assert ratio_text(0.514) == "51%"
    assert ratio_text(1.8) == "180%"
    assert ratio_text(250.0) == "250.0x"
    assert ratio_text(None) == ""


def test_a_section_shows_its_table_command_notes_and_failures() -> None:
    bench = Benchmark("x", "X: things per second", "x.md")
    outcomes = [
        RunOutcome(1, 10.0, 0, payload(fig(50, 100, True), load=2.5, notes=["n=1000"])),
        RunOutcome(2, 11.0, 3, None, ".pulse/bench/logs/x-2.log", "Traceback ...\nValueError: boom"),
    ]
    text = render_section(Section(bench, "failed", "python bench/x.py --n 5", outcomes), "Hand-written notes.")
    assert text.startswith("## X: things per second")
    assert "`python bench/x.py --n 5`" in text
    assert "| rate | 50 | events/s | bare | 100 | 50% | >= 50 % of bare | **met** (1/1) |" in text
    assert "**Run 2 failed** (exit 3" in text and "ValueError: boom" in text
    assert "Hand-written notes." in text
    assert "n=1000" in text


def test_missing_notes_and_scripts_without_json_are_said_so() -> None:
    bench = Benchmark("core_engine", "Core", "core.md")
    text = render_section(Section(bench, "no-json", "python bench/core_engine.py"), None)
    assert "No figures (script has no --json)" in text
    assert "_No notes yet (bench/notes/core.md)._" in text


def test_the_document_has_machine_versions_summary_and_the_non_speed_scripts() -> None:
    env = {"date": "2026-01-01 00:00 UTC", "cpus": 2, "cpu_model": "Some CPU", "ram_gib": 23.4,
           "os": "Debian 12", "python": "3.11.7", "kafka": "3.9.1", "java": "17.0.1",
           "versions": {"chdb": "4.4"}, "load_average": "1.00, 1.00, 1.00"}  # fmt: skip
    bench = Benchmark("x", "X: things per second", "x.md")
    section = Section(bench, "ok", "python bench/x.py", [RunOutcome(1, 1.0, 0, payload(fig(50, 100, False)))])
    doc = render(env, [section], {"x": "notes"}, 90.0, ["--only", "x"])
    assert doc.startswith("# Benchmarks")
    assert "2 CPUs (Some CPU), 23.4 GiB RAM, Debian 12" in doc
    assert "Kafka 3.9.1" in doc and "chdb 4.4" in doc
    assert "`python -m bench.run_all --only x`" in doc
    assert f"| [x](#{anchor(bench.title)}) | ok | 1 | rate: missed |" in doc
    for name in NOT_SPEED:
        assert f"bench/{name}.py" in doc


def test_anchor_follows_github() -> None:
    assert anchor("Scale-out: one worker and two workers") == "scale-out-one-worker-and-two-workers"


def test_overrides_replace_the_default_arguments() -> None:
    assert parse_overrides(["scale_out=--events 100 --rounds 2"]) == {"scale_out": ("--events", "100", "--rounds", "2")}


def test_every_listed_benchmark_exists_or_is_reported_missing_and_json_support_is_read_from_source() -> None:
    from bench.run_all import BENCH

    names = {b.name for b in BENCHMARKS}
    assert {"gateway_throughput", "worker_throughput", "sink_throughput", "core_engine", "e2e_freshness",
            "scale_out", "many_communities"} <= names  # fmt: skip
    assert supports_json(BENCH / "e2e_freshness.py")
    assert not set(NOT_SPEED) & names


def test_a_script_is_run_with_json_and_a_failing_one_is_reported(tmp_path: Any, monkeypatch: Any) -> None:
    """The imperative part with two tiny scripts (no broker): figures collected, failure kept with its log."""
    import bench.run_all as run_all

    root = str(run_all.ROOT)
    (tmp_path / "good.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {root!r})\n"
        "from bench import figures\n"
        "path = sys.argv[sys.argv.index('--json') + 1]\n"
        "r = figures.Report('good', 'python bench/good.py')\n"
        "r.add(figures.Figure('rate', float(sys.argv[1]), 'x/s', 'bare', 10.0, '>= 50 %', True))\n"
        "figures.write(path, r)\n"
    )
    (tmp_path / "bad.py").write_text("import sys\nprint('something broke')\nsys.exit(3)\n")
    monkeypatch.setattr(run_all, "BENCH", tmp_path)
    good = run_all.Benchmark("good", "Good", "good.md", runs=1)
    outcome = run_all.run_once(good, ["7"], 1, 1, "[1/2]", tmp_path, 0.0)
    assert outcome.exit_code == 0
    assert outcome.payload is not None and outcome.payload["figures"][0]["value"] == 7.0
    bad = run_all.Benchmark("bad", "Bad", "bad.md", runs=1)
    outcome = run_all.run_once(bad, [], 1, 1, "[2/2]", tmp_path, 0.0)
    assert outcome.exit_code == 3
    assert outcome.payload is None
    assert "something broke" in outcome.error


def test_from_cache_runs_nothing_and_writes_the_last_results_with_the_notes_of_now(
    tmp_path: Any, monkeypatch: Any
) -> None:
    import bench.run_all as run_all

    bench = run_all.Benchmark("good", "Good things", "good.md", runs=1)
    (tmp_path / "bench").mkdir()
    # a script that would leave a mark if it ran
    (tmp_path / "bench" / "good.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').write('x')\n# --json\n")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "good.md").write_text("Edited after the run.\n")
    monkeypatch.setattr(run_all, "BENCHMARKS", (bench,))
    monkeypatch.setattr(run_all, "BENCH", tmp_path / "bench")
    monkeypatch.setattr(run_all, "NOTES", tmp_path / "notes")
    monkeypatch.setattr(run_all, "CACHE", tmp_path / "cache")
    payload = {"figures": [{"name": "rate", "value": 123.0, "unit": "x/s"}], "notes": []}
    section = run_all.Section(bench, "ok", "python bench/good.py", [run_all.RunOutcome(1, 1.0, 0, payload)])
    section.when = "2026-12-04 18:00 UTC"
    run_all.save(section)
    out = tmp_path / "doc.md"
    assert run_all.main(["--from-cache", "--output", str(out)]) == 0
    doc = out.read_text()
    assert not (tmp_path / "ran").exists()
    assert "| rate | 123 |" in doc
    assert "Edited after the run." in doc
    assert "2026-12-04 18:00 UTC" in doc
