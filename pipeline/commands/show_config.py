"""Print the effective configuration: every PULSE_* variable, its value (secrets
masked) and what it does. Exits 2 with the variable's name when one is invalid."""

from __future__ import annotations

import argparse

from pipeline.config import Settings

HELP = "print the effective configuration (secrets masked)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print as a JSON object")


def run(args: argparse.Namespace, settings: Settings) -> int:
    rows = settings.described()
    if args.json:
        import json

        print(json.dumps({name: value for name, value, _ in rows}, indent=2))
        return 0
    width = max(len(name) for name, _, _ in rows)
    for name, value, help_text in rows:
        print(f"{name:<{width}}  {value}")
        print(f"{'':<{width}}    {help_text}")
    return 0
