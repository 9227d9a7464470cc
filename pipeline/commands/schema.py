"""Write the canonical event's JSON Schema to schemas/ (or check it is current)."""

from __future__ import annotations

import argparse
import sys

from pipeline.config import Settings
from pipeline.events import SCHEMA_PATH, json_schema_text

HELP = "export the canonical event JSON Schema to schemas/"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed schema differs from the model")


def run(args: argparse.Namespace, settings: Settings) -> int:
    text = json_schema_text()
    if args.check:
        current = SCHEMA_PATH.read_text(encoding="utf-8") if SCHEMA_PATH.exists() else ""
        if current != text:
            print(f"{SCHEMA_PATH} is out of date: run `pulse schema`", file=sys.stderr)
            return 1
        print(f"{SCHEMA_PATH} is current")
        return 0
    SCHEMA_PATH.parent.mkdir(parents=True, exist_ok=True)
    SCHEMA_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {SCHEMA_PATH}")
    return 0
