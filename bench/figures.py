"""The figures a benchmark script measured, in a form `make bench` can collect.

Every script under bench/ prints its figures for a reader and, given ``--json PATH``, also
writes them there with :func:`write`. ``bench/run_all.py`` runs each script several times and
renders the median of each figure (and of its same-run baseline) into docs/benchmarks.md.

A figure that is compared with a baseline names it and carries the baseline's value from the
same run, so the ratio is never between two different moments of a loaded machine.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Figure:
    """One measured number, e.g. ``Figure("kafka, closed loop", 1120, "deliveries/s", ...)``."""

    name: str
    value: float
    unit: str
    #: what this figure is measured against in the same run, e.g. "bare, closed loop"
    baseline: str | None = None
    baseline_value: float | None = None
    #: the issue's target in words, e.g. ">= 50 % of bare" or "p99 < 2,000 ms"
    target: str | None = None
    #: whether the target is met in this run; None when the figure has no target
    met: bool | None = None

    @property
    def ratio(self) -> float | None:
        if self.baseline_value in (None, 0):
            return None
        assert self.baseline_value is not None
        return self.value / self.baseline_value


@dataclass
class Report:
    """What one run of one benchmark script measured."""

    benchmark: str
    command: str
    figures: list[Figure] = field(default_factory=list)
    #: free-form context a reader needs (sizes, parameters), one line each
    notes: list[str] = field(default_factory=list)

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure


def machine() -> dict[str, Any]:
    """Where the figures were measured; load average at the moment of writing."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def write(path: str | Path | None, report: Report) -> None:
    """Write ``report`` as JSON to ``path`` (nothing when path is None)."""
    if path is None:
        return
    payload = {
        "benchmark": report.benchmark,
        "command": report.command,
        "machine": machine(),
        "notes": report.notes,
        "figures": [asdict(f) | {"ratio": f.ratio} for f in report.figures],
    }
    Path(path).write_text(json.dumps(payload, indent=2) + "\n")


def read(path: str | Path) -> Report:
    payload = json.loads(Path(path).read_text())
    figures = [
        Figure(**{k: v for k, v in f.items() if k != "ratio"}) for f in payload["figures"]
    ]
    return Report(payload["benchmark"], payload["command"], figures, list(payload.get("notes", [])))
