"""``aiofast check``: run the guardrails over a file and print what they find.

Prints one line per finding (position, rule, action, score) and never the matched
text, so the output is safe to paste into a ticket. Exit status: 0 when nothing was
found, 1 when something was, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from aiofast.errors import ConfigError, InvalidInputError
from aiofast.guard import Finding, Guard

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "check",
        help="run the guardrails on a file",
        description="Scan a text file (or - for stdin) with a guard rule set and print findings.",
    )
    parser.add_argument("file", help="text file to scan, or - for standard input")
    parser.add_argument(
        "--rules",
        type=Path,
        help="rule set as JSON, or TOML with a [guard] table (default: the built-in packs)",
    )
    parser.add_argument(
        "--target",
        choices=["input", "output"],
        help="scan as a prompt or as a model answer (default: every rule)",
    )
    parser.add_argument("--redact", action="store_true", help="print the redacted text instead")
    parser.add_argument("--json", action="store_true", help="print findings as JSON lines")
    return parser


def load_rules(path: Path) -> dict[str, Any]:
    """A rule set from a JSON file, or from the ``[guard]`` table of a TOML policy."""
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--rules: cannot read {path}: {exc.strerror}") from exc
    try:
        if path.suffix == ".toml":
            data: dict[str, Any] = tomllib.loads(raw)
            return dict(data.get("guard", data))
        loaded = json.loads(raw)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            f"--rules: {path} is not valid {path.suffix[1:] or 'JSON'}: {exc}"
        ) from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"--rules: {path} must hold an object with packs/rules/overrides")
    return loaded


def _read(file: str) -> str:
    if file == "-":
        return sys.stdin.read()
    try:
        return Path(file).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InvalidInputError(f"cannot read {file}: {exc.strerror}") from exc


def _line_col(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _describe(text: str, f: Finding) -> str:
    line, col = _line_col(text, f.start)
    mode = f"{f.action} (shadow)" if f.shadow else f.action
    return (
        f"{line}:{col}\t{f.rule_id}\t{f.label}\t{mode}\tscore={f.score:.2f}\t"
        f"chars {f.start}-{f.end}"
    )


def run(args: argparse.Namespace) -> int:
    guard = Guard(load_rules(args.rules)) if args.rules else Guard()
    text = _read(args.file)
    if args.redact:
        sys.stdout.write(guard.redact(text, target=args.target))
        return 0
    findings = guard.scan(text, target=args.target)
    for f in findings:
        if args.json:
            line, col = _line_col(text, f.start)
            record = {"line": line, "column": col, **f.__dict__}
            print(json.dumps(record))
        else:
            print(_describe(text, f))
    if not args.json:
        print(f"{len(findings)} finding(s), {len(guard.rules)} rules", file=sys.stderr)
    return 1 if findings else 0
