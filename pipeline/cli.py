"""`pulse`: the command line of Community Pulse.

Each subcommand lives in its own module exposing ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args, settings) -> int``. Those modules
import their heavy dependencies inside ``run`` so that ``pulse --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from pipeline import config
from pipeline.logs import setup_logging

# name -> module implementing it, in the order `pulse --help` lists them
COMMANDS: dict[str, str] = {
    "run": "pipeline.commands.run",
    "config": "pipeline.commands.show_config",
    "schema": "pipeline.commands.schema",
    "stack": "pipeline.stack.command",
    "gateway": "pipeline.gateway.command",
    "worker": "pipeline.worker.command",
    "simulate": "pipeline.simulate.command",
    "replay": "pipeline.replay.command",
    "db": "pipeline.storage.command",
    "report": "pipeline.report.command",
}

DESCRIPTION = """\
Community Pulse turns platform webhooks into live engagement signals:
activity, active members, participation concentration, first-response latency,
unanswered threads and a health state per community.

Settings come from PULSE_* environment variables (see `pulse config`)."""


def _load(module_name: str) -> ModuleType | None:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            return None  # the command's module is not part of this build
        raise


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, ModuleType]]:
    parser = argparse.ArgumentParser(
        prog="pulse", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules: dict[str, ModuleType] = {}
    for name, module_name in COMMANDS.items():
        module = _load(module_name)
        if module is None:
            continue
        modules[name] = module
        doc = (module.__doc__ or "").strip()
        command_parser = sub.add_parser(
            name,
            help=module.HELP,
            description=doc or module.HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(command_parser)
    return parser, modules


def main(argv: Sequence[str] | None = None) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        settings = config.load()
    except config.ConfigError as exc:
        print(f"pulse: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    try:
        return int(modules[args.command].run(args, settings) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
