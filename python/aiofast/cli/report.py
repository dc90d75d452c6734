"""``aiofast report``: cost and tokens from the usage ledger, grouped several ways."""

from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path

import orjson

from aiofast.cli._output import format_table
from aiofast.errors import ConfigError
from aiofast.ledger import GROUPS, summarize
from aiofast.policy import default_policy, load_policy
from aiofast.timespec import parse_time

__all__ = ["add_parser", "run"]

COLUMNS = [
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "successes",
    "cost_per_success_usd",
]


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "report",
        help="cost per user, key, team, model and tier from the usage ledger",
        description="Read the usage ledger and print cost, tokens and cost per successful "
        "outcome, grouped by each of --by over a period.",
    )
    parser.add_argument("--config", metavar="FILE", help="policy whose ledger.path to read")
    parser.add_argument("--ledger", metavar="PATH", help="ledger file (overrides --config)")
    parser.add_argument("--since", help="start: Unix seconds, ISO 8601, or a duration ago (7d)")
    parser.add_argument("--until", help="end, same formats")
    parser.add_argument(
        "--by",
        default="user,key,team,model,tier",
        help=f"comma-separated groupings, each its own table; from {', '.join(GROUPS)}",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    return parser


def run(args: argparse.Namespace) -> int:
    path = (
        args.ledger or (load_policy(args.config) if args.config else default_policy()).ledger.path
    )
    if not path or not Path(path).exists():
        raise ConfigError(f"no ledger at {path!r}; pass --ledger PATH or --config FILE")
    since = parse_time(args.since) if args.since else None
    until = parse_time(args.until) if args.until else None
    groupings = [g.strip() for g in args.by.split(",") if g.strip()]
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        total = summarize(connection, [], since, until)
        tables = {group: summarize(connection, [group], since, until) for group in groupings}
    except ValueError as exc:
        raise ConfigError(f"--by: {exc}") from None
    finally:
        connection.close()
    if args.json:
        print(orjson.dumps({"total": total, "by": tables}, option=orjson.OPT_INDENT_2).decode())
        return 0
    print(f"ledger {path}")
    print(format_table(total, COLUMNS))
    for group, rows in tables.items():
        print(f"\nby {group}")
        print(format_table(rows, [group, *COLUMNS]))
    return 0
