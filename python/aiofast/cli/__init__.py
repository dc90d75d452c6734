"""The ``aiofast`` command line.

Each subcommand lives in its own module of this package and exposes
``add_parser(subparsers)`` and ``run(args) -> int``; this module only dispatches.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from aiofast import __version__
from aiofast.errors import AiofastError

# Module names under aiofast.cli, in the order `aiofast --help` lists them.
COMMANDS: tuple[str, ...] = ("count", "check", "serve", "simulate", "replay", "report", "keygen")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aiofast", description="The operations layer for LLM traffic."
    )
    parser.add_argument("--version", action="version", version=f"aiofast {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"aiofast.cli.{name}")
        sub = module.add_parser(subparsers)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        code: int = args.run(args)
    except AiofastError as exc:
        print(f"aiofast: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code
