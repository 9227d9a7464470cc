"""Write the generated Grafana files, or check them for drift (--check)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.dashboards.render import GRAFANA_DIR, drift, write


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.dashboards", description=__doc__)
    parser.add_argument("--out", type=Path, default=GRAFANA_DIR, help="grafana directory (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if any file differs")
    args = parser.parse_args(argv)
    if args.check:
        problems = drift(args.out)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run `python -m pipeline.dashboards` to regenerate", file=sys.stderr)
        return 1 if problems else 0
    for path in write(args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
