"""``aiofast count``: tokens of a text file, or prompt tokens of a chat request."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from aiofast.errors import InvalidInputError
from aiofast.tokens import ENCODINGS, count_chat, count_tokens


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "count",
        help="count the tokens of a text file or a chat request",
        description="Print the number of tokens in FILE (or standard input with '-'). With "
        "--chat, FILE is an OpenAI chat request body and the output is its prompt tokens "
        "as JSON.",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model", help="count as this model does (default: o200k_base)")
    which.add_argument("--encoding", choices=ENCODINGS, help="count with this encoding")
    parser.add_argument(
        "--chat", action="store_true", help="FILE is a chat completion request (JSON)"
    )
    parser.add_argument("file", metavar="FILE", help="file to read, or - for standard input")
    return parser


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise InvalidInputError(f"cannot read FILE {path!r}: {exc.strerror}") from None


def run(args: argparse.Namespace) -> int:
    data = _read(args.file)
    if args.chat:
        if args.encoding is not None:
            raise InvalidInputError("--chat takes --model, not --encoding")
        result = count_chat(data, model=args.model)
        print(orjson.dumps(result.__dict__).decode())
        return 0
    # Invalid UTF-8 becomes U+FFFD, as it would in any text decoded with errors="replace".
    text = data.decode("utf-8", errors="replace")
    print(count_tokens(text, encoding=args.encoding, model=args.model))
    return 0
