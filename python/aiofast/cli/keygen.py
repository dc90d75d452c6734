"""``aiofast keygen``: a new virtual API key and the digest to put in the policy."""

from __future__ import annotations

import argparse

from aiofast.auth import digest, new_key

__all__ = ["add_parser", "run"]


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "keygen",
        help="make a virtual API key and its policy digest",
        description="Print a fresh key (give it to the caller) and the [[keys]] entry with "
        "its sha256 digest (put it in the policy; the key itself is never stored).",
    )
    parser.add_argument("--user", default="", help="user the key belongs to")
    parser.add_argument("--team", default="", help="team the key belongs to")
    parser.add_argument("--name", default="", help="a name for the key in reports")
    return parser


def run(args: argparse.Namespace) -> int:
    key = new_key()
    print(f"key: {key}")
    print()
    print("[[keys]]")
    print(f'digest = "{digest(key)}"')
    for field in ("name", "user", "team"):
        value = getattr(args, field)
        if value:
            print(f"{field} = {value!r}".replace("'", '"'))
    return 0
