"""``aiofast simulate``: run the simulated provider alone, for benchmarks and demos."""

from __future__ import annotations

import argparse
import asyncio

from aiofast.policy import SimulatedFaults, SimulatedSettings
from aiofast.server import serve_until_stopped
from aiofast.simulated import SimulatedProvider

__all__ = ["add_parser", "run"]


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "simulate",
        help="run the simulated OpenAI-compatible provider",
        description="Serve deterministic completions in the OpenAI wire format, with "
        "configurable latency and injected faults.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9090)
    parser.add_argument("--ttft-ms", type=float, default=120.0, help="time to first token")
    parser.add_argument("--inter-token-ms", type=float, default=8.0, help="delay between tokens")
    parser.add_argument("--min-tokens", type=int, default=16, help="shortest reply")
    parser.add_argument("--max-tokens", type=int, default=256, help="longest reply")
    parser.add_argument("--error-rate", type=float, default=0.0, help="share of faulty answers")
    parser.add_argument(
        "--fault",
        action="append",
        choices=["429", "500", "529", "hang", "cut"],
        help="fault kinds to inject (repeatable; default 500)",
    )
    parser.add_argument("--cut-after", type=int, default=3, help="chunks before a 'cut' fault")
    parser.add_argument("--retry-after", type=float, default=1.0, help="Retry-After of a 429")
    return parser


def run(args: argparse.Namespace) -> int:
    faults = SimulatedFaults(
        error_rate=args.error_rate,
        kinds=tuple(args.fault or ["500"]),
        retry_after=args.retry_after,
        cut_after_chunks=args.cut_after,
    )
    settings = SimulatedSettings(
        ttft_ms=args.ttft_ms,
        inter_token_ms=args.inter_token_ms,
        min_output_tokens=args.min_tokens,
        max_output_tokens=args.max_tokens,
        faults=faults,
    )
    app = SimulatedProvider(settings).app()

    def ready(url: str) -> None:
        print(f"simulated provider on {url}/v1", flush=True)

    try:
        import uvloop
    except ImportError:
        asyncio.run(serve_until_stopped(app, args.host, args.port, ready))
    else:
        uvloop.run(serve_until_stopped(app, args.host, args.port, ready))
    return 0
