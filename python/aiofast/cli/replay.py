"""``aiofast replay``: send a prompts or traffic file through a gateway and report."""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

import orjson
from aiohttp import web

from aiofast.cli._output import ProgressBar, format_table
from aiofast.gateway import create_app
from aiofast.policy import default_policy, load_policy
from aiofast.replay import ReplayReport, load_conversations, replay

__all__ = ["add_parser", "run"]


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "replay",
        help="replay a prompts file through a gateway and report cost and latency",
        description="Send a prompts file (MT-Bench, Alpaca, ShareGPT, or recorded chat "
        "requests; JSON or JSONL) to a gateway. Multi-turn conversations are sent turn by "
        "turn with the replies so far. Without --url, an in-process gateway serves the "
        "policy of --config (or the embedded default).",
    )
    parser.add_argument("file", help="prompts or traffic file")
    parser.add_argument("--url", help="gateway base URL, such as http://127.0.0.1:8080")
    parser.add_argument("--config", metavar="FILE", help="policy for the in-process gateway")
    parser.add_argument("--concurrency", type=int, default=4, help="conversations at once")
    parser.add_argument("--model", help="model or tier for every request (default: small)")
    parser.add_argument("--max-tokens", type=int, help="max_tokens of every request")
    parser.add_argument("--limit", type=int, help="replay only the first N conversations")
    parser.add_argument(
        "--key-env", default="AIOFAST_KEY", help="environment variable holding the API key"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def run(args: argparse.Namespace) -> int:
    conversations = load_conversations(args.file)
    if args.limit is not None:
        conversations = conversations[: args.limit]
    bar = ProgressBar()

    def progress(done: int, total: int, report: ReplayReport) -> None:
        errors = sum(1 for r in report.results if r.status != 200)
        cost = sum(r.cost for r in report.results)
        bar.update(done, total, f"errors {errors}  ${cost:.4f}")

    async def main() -> ReplayReport:
        options: dict[str, Any] = {
            "concurrency": args.concurrency,
            "model": args.model,
            "api_key": os.environ.get(args.key_env),
            "max_tokens": args.max_tokens,
            "progress": progress,
        }
        if args.url:
            return await replay(conversations, args.url, **options)
        policy = load_policy(args.config) if args.config else default_policy()
        runner = web.AppRunner(create_app(policy), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            url = f"http://127.0.0.1:{runner.addresses[0][1]}"
            return await replay(conversations, url, **options)
        finally:
            await runner.cleanup()

    report = asyncio.run(main())
    summary = report.summary()
    if args.json:
        print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    else:
        print(render(summary))
    return 0 if summary["succeeded"] == summary["requests"] else 1


def render(summary: dict[str, Any]) -> str:
    latency = summary["latency_ms"]
    lines = [
        f"requests     {summary['requests']}  (succeeded {summary['succeeded']}, "
        f"{summary['requests_per_s']}/s over {summary['elapsed_s']} s)",
        f"tokens       {summary['input_tokens']:,} in, {summary['output_tokens']:,} out",
        f"cost         ${summary['cost_usd']:.6f}",
    ]
    if latency:
        lines.append(
            "latency ms   " + "  ".join(f"{name} {value:,.1f}" for name, value in latency.items())
        )
    errors = summary["errors"]
    lines.append("errors       " + (", ".join(f"{k}: {v}" for k, v in errors.items()) or "none"))
    lines.append("")
    columns = ["tier", "model", "requests", "input_tokens", "output_tokens", "cost_usd"]
    lines.append(format_table(summary["by_tier_model"], columns))
    return "\n".join(lines)
