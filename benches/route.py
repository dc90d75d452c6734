"""Routing decisions per second through Python: the Rust router against plain Python.

The policy: 3 tiers, 10 deployments, 5 rules (token count, user tier, tags, tools, a
guardrail verdict), one sticky experiment (a canary deployment taking 10 % of the medium
tier's users), context windows, prices, a breaker held open on one deployment, and a
strategy per tier (weighted random, lowest latency, cheapest). The peer is the same policy
written as a reader would in Python: dataclasses, a loop over rules, an md5-based sticky
hash (C-speed, faster than the pure-Python FNV some SDKs use), ``random`` for weighted order.

Before timing, both sides decide the same 2,000 requests and must agree on tier, rule,
dropped deployments and the candidate set (the order of weighted-random tiers is random
on both sides). Then rounds alternate A B A B; the figure is the median of rounds.

    python benches/route.py [--smoke]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import math
import platform
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiofast.routing import RouteFacts, Router

RESULTS = Path(__file__).resolve().parent / "results"


def deployment(name: str, price: float, window: int, weight: float = 1.0) -> dict[str, Any]:
    return {
        "name": name,
        "upstream": "sim",
        "model": f"model-{name}",
        "weight": weight,
        "context_window": window,
        "input_usd_per_mtok": price,
        "output_usd_per_mtok": price * 4,
    }


SPEC: dict[str, Any] = {
    "deployments": [
        deployment("small-1", 0.15, 16_000, 3),
        deployment("small-2", 0.10, 16_000, 2),
        deployment("small-3", 0.20, 32_000, 1),
        deployment("medium-1", 2.5, 128_000),
        deployment("medium-2", 2.0, 128_000),
        deployment("medium-3", 3.0, 128_000),
        deployment("medium-canary", 2.2, 128_000, 0),
        deployment("large-1", 15.0, 200_000),
        deployment("large-2", 12.0, 200_000),
        deployment("large-3", 10.0, 1_000_000),
    ],
    "tiers": [
        {
            "name": "small",
            "deployments": ["small-1", "small-2", "small-3"],
            "fallbacks": ["medium"],
        },
        {
            "name": "medium",
            "deployments": ["medium-1", "medium-2", "medium-3", "medium-canary"],
            "strategy": "lowest_latency",
            "aliases": ["gpt-4o"],
        },
        {"name": "large", "deployments": ["large-1", "large-2", "large-3"], "strategy": "cheapest"},
    ],
    "rules": [
        {"name": "long-context", "when": {"input_tokens_over": 12_000}, "tier": "large"},
        {"name": "enterprise", "when": {"user_tier_in": ["enterprise"]}, "tier": "medium"},
        {"name": "quality", "when": {"tags_any": ["quality", "legal"]}, "tier": "large"},
        {
            "name": "agents",
            "when": {"has_tools": True, "input_tokens_over": 2_000},
            "tier": "medium",
        },
        {"name": "sensitive", "when": {"guard_route_in": ["sensitive"]}, "tier": "large"},
    ],
    "default_tier": "small",
    "experiments": [
        {
            "name": "medium-canary",
            "tiers": ["medium"],
            "variants": [
                {"name": "canary", "weight": 10, "deployment": "medium-canary"},
                {"name": "control", "weight": 90},
            ],
        }
    ],
    "breaker": {"min_calls": 3, "cooldown_seconds": 3600},
}
BROKEN = "small-3"
LATENCIES = {"medium-1": 0.8, "medium-2": 0.5, "medium-3": 1.2, "medium-canary": 0.9}


# --- the peer: the same policy in plain Python ---------------------------------------------


@dataclass
class PyFacts:
    input_tokens: int = 0
    max_output_tokens: int | None = None
    model: str | None = None
    tags: list[str] = field(default_factory=list)
    user: str | None = None
    user_tier: str | None = None
    has_tools: bool = False
    guard_routes: list[str] = field(default_factory=list)
    budget_remaining_usd: float | None = None


@dataclass
class PyDecision:
    tier: str
    rule: str | None
    candidates: list[str]
    dropped: list[tuple[str, str]]
    assignments: list[tuple[str, str]]


class PyRouter:
    """The benchmark policy in idiomatic Python, with the same semantics as the core."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.deployments = {d["name"]: d for d in spec["deployments"]}
        self.tiers = {t["name"]: t for t in spec["tiers"]}
        self.aliases = {
            a: t["name"] for t in spec["tiers"] for a in [t["name"], *t.get("aliases", [])]
        }
        self.rules = spec["rules"]
        self.default_tier = spec["default_tier"]
        self.experiments = spec["experiments"]
        self.open_breakers: set[str] = set()
        self.latency: dict[str, float] = {}
        self.rng = random.Random(1)

    def matches(self, when: dict[str, Any], f: PyFacts) -> bool:
        if "input_tokens_over" in when and not f.input_tokens > when["input_tokens_over"]:
            return False
        if "user_tier_in" in when and f.user_tier not in when["user_tier_in"]:
            return False
        if "tags_any" in when and not any(t in f.tags for t in when["tags_any"]):
            return False
        if "has_tools" in when and f.has_tools != when["has_tools"]:
            return False
        return not (
            "guard_route_in" in when
            and not any(r in f.guard_routes for r in when["guard_route_in"])
        )

    def variant(self, experiment: dict[str, Any], subject: str) -> dict[str, Any]:
        digest = hashlib.md5(f"{experiment['name']}:{subject}".encode()).digest()
        point = int.from_bytes(digest[:4], "big") / 2**32
        total = sum(v["weight"] for v in experiment["variants"])
        cumulative = 0.0
        for v in experiment["variants"]:
            cumulative += v["weight"] / total
            if point < cumulative:
                return v
        return experiment["variants"][-1]

    def order(self, tier: dict[str, Any], f: PyFacts) -> list[str]:
        def draw(name: str) -> float:
            weight = self.deployments[name]["weight"]
            if weight <= 0:
                return math.inf
            return -math.log(self.rng.random() or 1e-300) / weight

        keyed = sorted(tier["deployments"], key=draw)
        strategy = tier.get("strategy", "weighted_random")
        if strategy == "lowest_latency":
            keyed.sort(key=lambda d: self.latency.get(d, 0.0))
        elif strategy == "cheapest":
            out = f.max_output_tokens or 256
            keyed.sort(
                key=lambda d: (
                    f.input_tokens * self.deployments[d]["input_usd_per_mtok"]
                    + out * self.deployments[d]["output_usd_per_mtok"]
                )
            )
        return keyed

    def drop_reason(self, name: str, f: PyFacts) -> str | None:
        d = self.deployments[name]
        if f.input_tokens + (f.max_output_tokens or 0) > d["context_window"]:
            return "context_window"
        if f.budget_remaining_usd is not None:
            cost = (
                f.input_tokens * d["input_usd_per_mtok"]
                + (f.max_output_tokens or 0) * d["output_usd_per_mtok"]
            ) / 1e6
            if cost > f.budget_remaining_usd:
                return "too_expensive"
        if name in self.open_breakers:
            return "breaker_open"
        return None

    def decide(self, f: PyFacts) -> PyDecision:
        tier_name, rule = self.default_tier, None
        for r in self.rules:
            if self.matches(r["when"], f):
                tier_name, rule = r["tier"], r["name"]
                break
        else:
            if f.model in self.aliases:
                tier_name = self.aliases[f.model]
        pinned, assignments = None, []
        for e in self.experiments:
            if tier_name not in e["tiers"] or f.user is None:
                continue
            v = self.variant(e, f.user)
            assignments.append((e["name"], v["name"]))
            pinned = v.get("deployment", pinned)
        tier = self.tiers[tier_name]
        seen: set[str] = set()
        candidates, dropped = [], []
        names = [pinned] if pinned else []
        for t in [tier_name, *tier.get("fallbacks", [])]:
            names.extend(self.order(self.tiers[t], f))
        for name in names:
            if name in seen:
                continue
            seen.add(name)
            reason = self.drop_reason(name, f)
            if reason is None:
                candidates.append(name)
            else:
                dropped.append((name, reason))
        return PyDecision(tier_name, rule, candidates, dropped, assignments)


# --- workload and timing -------------------------------------------------------------------


def workload(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    requests = []
    for i in range(n):
        requests.append(
            {
                "input_tokens": int(rng.lognormvariate(7, 1.3)),
                "max_output_tokens": rng.choice([None, 256, 1024, 4096]),
                "model": rng.choice([None, None, "gpt-4o", "small"]),
                "tags": rng.sample(["quality", "batch", "legal", "internal"], rng.randint(0, 2))
                if rng.random() < 0.2
                else [],
                "user": f"user-{rng.randint(0, 5000)}",
                "user_tier": rng.choice([None, "free", "pro", "enterprise"]),
                "has_tools": rng.random() < 0.3,
                "guard_routes": ["sensitive"] if rng.random() < 0.03 else [],
                "budget_remaining_usd": rng.choice([None, None, 0.01, 5.0]),
                "request_id": f"req-{i}",
            }
        )
    return requests


def build_routers() -> tuple[Router, PyRouter]:
    router = Router(SPEC, seed=1)
    peer = PyRouter(SPEC)
    for _ in range(3):
        router.start(BROKEN)
        router.record(BROKEN, False)
    peer.open_breakers.add(BROKEN)
    for name, latency in LATENCIES.items():
        router.start(name)
        router.record(name, True, latency)
        peer.latency[name] = latency
    return router, peer


def py_facts(r: dict[str, Any]) -> PyFacts:
    return PyFacts(**{k: v for k, v in r.items() if k != "request_id"})


def check_equal(router: Router, peer: PyRouter, requests: list[dict[str, Any]]) -> None:
    for r in requests:
        ours = router.decide(RouteFacts(**r))
        theirs = peer.decide(py_facts(r))
        same = (
            ours.tier == theirs.tier
            and ours.rule == theirs.rule
            and sorted((d, why) for d, why, _ in ours.dropped) == sorted(theirs.dropped)
            and sorted(ours.candidates) == sorted(theirs.candidates)
        )
        if not same:
            raise SystemExit(f"decisions differ for {r}: {ours!r} vs {theirs!r}")


def timed(run: Callable[[], None], count: int) -> float:
    start = time.perf_counter()
    run()
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few seconds, to check it runs")
    args = parser.parse_args()
    rounds = 3 if args.smoke else 15
    requests = workload(2_000 if args.smoke else 10_000, seed=7)
    router, peer = build_routers()
    check_equal(router, peer, requests[:2_000])

    ours_facts = [RouteFacts(**r) for r in requests]
    peer_facts = [py_facts(r) for r in requests]

    def aiofast_decide() -> None:
        for f in ours_facts:
            router.decide(f).candidates  # noqa: B018 - the list is part of the work

    def aiofast_with_facts() -> None:
        for r in requests:
            router.decide(RouteFacts(**r)).candidates  # noqa: B018

    def peer_decide() -> None:
        for f in peer_facts:
            peer.decide(f).candidates  # noqa: B018

    def peer_with_facts() -> None:
        for r in requests:
            peer.decide(py_facts(r)).candidates  # noqa: B018

    cases = {
        "decide (facts built)": (aiofast_decide, peer_decide),
        "facts + decide": (aiofast_with_facts, peer_with_facts),
    }
    results: dict[str, dict[str, float]] = {}
    for label, (ours, theirs) in cases.items():
        ours_rates, peer_rates, ratios = [], [], []
        for _ in range(rounds):
            a = timed(ours, len(requests))
            b = timed(theirs, len(requests))
            ours_rates.append(a)
            peer_rates.append(b)
            ratios.append(a / b)
        results[label] = {
            "aiofast_per_s": statistics.median(ours_rates),
            "python_per_s": statistics.median(peer_rates),
            "ratio": statistics.median(ratios),
        }

    print(f"{'case':<24}{'aiofast/s':>14}{'python/s':>14}{'ratio':>9}")
    for label, row in results.items():
        print(
            f"{label:<24}{row['aiofast_per_s']:>14,.0f}{row['python_per_s']:>14,.0f}"
            f"{row['ratio']:>8.2f}x"
        )
    RESULTS.mkdir(exist_ok=True)
    report = {
        "bench": "route",
        "smoke": args.smoke,
        "rounds": rounds,
        "requests_per_round": len(requests),
        "results": results,
        "versions": {
            "aiofast": importlib.metadata.version("aiofast"),
            "python": platform.python_version(),
        },
        "machine": platform.processor() or platform.machine(),
    }
    (RESULTS / "route.json").write_text(json.dumps(report, indent=2))
    print(f"ratio: {results['decide (facts built)']['ratio']:.2f}x vs plain Python")


if __name__ == "__main__":
    main()
