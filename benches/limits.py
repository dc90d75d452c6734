"""Admission decisions per second through Python: the native limiter against ``limits``
(moving window and fixed window, memory storage) and ``aiolimiter``.

One decision is what a gateway does per request: admit, then settle what the admission
reserved (the peers have nothing to release). Requests cycle over 10,000 API keys with a
per-key limit of 1,000 per minute that no key reaches, so every implementation admits every
request and does the same work: the check and the update. Each side uses its best API:

- ``limits``: ``hit(item, key)`` with the rate item parsed once and the key as a string.
- ``aiolimiter``: one ``AsyncLimiter`` per key, built once; ``has_capacity`` then ``acquire``.
- ``aiofast``: one ``RequestContext`` per key, built once (as a gateway keeps one per API
  key), ``admit`` then ``settle`` when the admission holds a reservation (``handle`` is 0 when
  only request rates applied: there is nothing to settle). The row ``aiofast, context per
  request`` builds the context on every request instead, as the gateway's limit stage does.

Cases:

- ``requests/min per key``: one rate per key, the peers' home ground.
- ``full policy``: per key requests/min + tokens/min + concurrency + daily budget, plus a
  global requests/min: one admit and one settle for aiofast; for the ``limits`` peers the
  nearest equivalent, a request hit and a token hit (``cost=tokens``) per key plus a global
  hit (they have no concurrency or spend limits).

Before timing, each implementation admits the same warm-up requests and must admit all
of them. Rounds interleave the implementations (A B C D A B C D …); the figure is the median
of rounds, and the ratio is taken per round.

    python benches/limits.py [--smoke]

The last line is ``ratio: N.NNx vs limits (fixed window)``, the faster of the two ``limits``
strategies, on the requests/min case.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This script has the name of the library it measures: drop its folder from the import
# path, or ``import limits`` below would import this file.
sys.path.remove(str(Path(__file__).resolve().parent))

import argparse
import asyncio
import importlib.metadata
import json
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import limits as limits_lib
from aiolimiter import AsyncLimiter
from limits import storage, strategies

from aiofast.limits import Limiter, RequestContext

RESULTS = Path(__file__).resolve().parent / "results"
KEYS = 10_000
PER_MINUTE = 1_000
TOKENS = 700
PEERS = ("limits moving window", "limits fixed window", "aiolimiter")


def aiofast_case(full: bool, context_per_request: bool = False) -> Callable[[int], int]:
    entries: list[dict[str, Any]] = [
        {"scope": "key", "requests_per_minute": PER_MINUTE, "burst": PER_MINUTE}
    ]
    if full:
        entries = [
            {
                "scope": "key",
                "requests_per_minute": PER_MINUTE,
                "burst": PER_MINUTE,
                "tokens_per_minute": PER_MINUTE * TOKENS,
                "concurrency": 64,
                "budget": {"usd": 1e6, "per": "day", "time_zone": "Europe/Berlin"},
            },
            {"scope": "global", "requests_per_minute": 60_000_000, "burst": 1_000_000},
        ]
    limiter = Limiter(entries)
    contexts = [
        RequestContext(key=f"key-{i}", input_tokens=500, reserved_output_tokens=200, cost_usd=0.01)
        for i in range(KEYS)
    ]
    keys = [f"key-{i}" for i in range(KEYS)]
    admit, settle = limiter.admit, limiter.settle

    def run(n: int) -> int:
        admitted = 0
        for i in range(n):
            admission = admit(contexts[i % KEYS])
            if admission.admitted:
                admitted += 1
                if admission.handle:
                    settle(admission.handle, 500, 150, 0.008)
        return admitted

    def run_building_contexts(n: int) -> int:
        admitted = 0
        for i in range(n):
            admission = admit(RequestContext(key=keys[i % KEYS]))
            if admission.admitted:
                admitted += 1
                if admission.handle:
                    settle(admission.handle, 500, 150, 0.008)
        return admitted

    return run_building_contexts if context_per_request else run


def limits_case(strategy: type[strategies.RateLimiter], full: bool) -> Callable[[int], int]:
    limiter = strategy(storage.MemoryStorage())
    per_key = limits_lib.parse(f"{PER_MINUTE}/minute")
    tokens = limits_lib.parse(f"{PER_MINUTE * TOKENS}/minute")
    everyone = limits_lib.parse("60000000/minute")
    keys = [f"key-{i}" for i in range(KEYS)]
    hit = limiter.hit

    def run(n: int) -> int:
        admitted = 0
        for i in range(n):
            key = keys[i % KEYS]
            if full:
                ok = (
                    hit(per_key, "rpm", key)
                    and hit(tokens, "tpm", key, cost=TOKENS)
                    and hit(everyone, "global")
                )
            else:
                ok = hit(per_key, key)
            admitted += ok
        return admitted

    return run


def aiolimiter_case() -> Callable[[int], int]:
    limiters = [AsyncLimiter(PER_MINUTE, 60) for _ in range(KEYS)]
    loop = asyncio.new_event_loop()

    async def decide(n: int) -> int:
        admitted = 0
        for i in range(n):
            limiter = limiters[i % KEYS]
            # The nearest equivalent of a non-blocking admission: check, then take.
            if limiter.has_capacity():
                await limiter.acquire()
                admitted += 1
        return admitted

    def run(n: int) -> int:
        return loop.run_until_complete(decide(n))

    return run


def timed(run: Callable[[int], int], n: int) -> float:
    start = time.perf_counter()
    admitted = run(n)
    elapsed = time.perf_counter() - start
    if admitted != n:
        raise SystemExit(f"only {admitted} of {n} requests admitted: the comparison is unfair")
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few seconds, to check it runs")
    args = parser.parse_args()
    rounds = 3 if args.smoke else 11
    per_round = 20_000 if args.smoke else 100_000

    cases: dict[str, dict[str, Callable[[int], int]]] = {
        "requests/min per key": {
            "aiofast": aiofast_case(full=False),
            "aiofast, context per request": aiofast_case(full=False, context_per_request=True),
            "limits moving window": limits_case(strategies.MovingWindowRateLimiter, full=False),
            "limits fixed window": limits_case(strategies.FixedWindowRateLimiter, full=False),
            "aiolimiter": aiolimiter_case(),
        },
        "full policy": {
            "aiofast": aiofast_case(full=True),
            "limits moving window": limits_case(strategies.MovingWindowRateLimiter, full=True),
            "limits fixed window": limits_case(strategies.FixedWindowRateLimiter, full=True),
        },
    }
    results: dict[str, dict[str, Any]] = {}
    # The full policy's moving-window peer stores one entry per token, so it gets fewer
    # decisions per round to keep the run short.
    sizes = {"requests/min per key": per_round, "full policy": per_round // 10}
    for label, impls in cases.items():
        n = sizes[label]
        for run in impls.values():
            timed(run, KEYS)  # warm-up: every key once, all admitted
        rates: dict[str, list[float]] = {name: [] for name in impls}
        ratios: dict[str, list[float]] = {name: [] for name in impls if name in PEERS}
        for _ in range(rounds):
            this_round = {name: timed(run, n) for name, run in impls.items()}
            for name, rate in this_round.items():
                rates[name].append(rate)
                if name in PEERS:
                    ratios[name].append(this_round["aiofast"] / rate)
        results[label] = {
            "per_s": {name: statistics.median(r) for name, r in rates.items()},
            "ratio": {name: statistics.median(r) for name, r in ratios.items()},
        }

    print(f"{'case':<22}{'implementation':<30}{'decisions/s':>14}{'ns/decision':>13}{'ratio':>9}")
    for label, row in results.items():
        for name, rate in row["per_s"].items():
            ratio = row["ratio"].get(name)
            shown = "" if ratio is None else f"{ratio:>8.2f}x"
            print(f"{label:<22}{name:<30}{rate:>14,.0f}{1e9 / rate:>13,.0f}{shown:>9}")
    print("(ratio column: aiofast, context built once per key, over the row; median of rounds)")
    RESULTS.mkdir(exist_ok=True)
    report = {
        "bench": "limits",
        "smoke": args.smoke,
        "rounds": rounds,
        "decisions_per_round": per_round,
        "keys": KEYS,
        "results": results,
        "versions": {
            name: importlib.metadata.version(name) for name in ("aiofast", "limits", "aiolimiter")
        }
        | {"python": platform.python_version()},
        "machine": platform.processor() or platform.machine(),
    }
    (RESULTS / "limits.json").write_text(json.dumps(report, indent=2))
    headline = results["requests/min per key"]["ratio"]["limits fixed window"]
    print(f"ratio: {headline:.2f}x vs limits (fixed window)")


if __name__ == "__main__":
    main()
