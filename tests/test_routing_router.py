"""The router through Python: rules, experiments, breakers and spec validation."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiofast import ConfigError, NotFoundError
from aiofast.routing import RouteFacts, Router, route_bucket

_MASK = (1 << 64) - 1


def reference_bucket(salt: str, subject: str) -> int:
    """The documented sticky hash, written out independently of the Rust code."""
    h = 0xCBF29CE484222325
    for byte in salt.encode() + b":" + subject.encode():
        h = ((h ^ byte) * 0x100000001B3) & _MASK
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _MASK
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _MASK
    h ^= h >> 33
    return h >> 32


def spec(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "deployments": [
            {"name": "mini", "upstream": "sim", "model": "m-mini", "context_window": 16000},
            {"name": "mid-a", "upstream": "sim", "model": "m-mid", "input_usd_per_mtok": 1.0},
            {"name": "mid-b", "upstream": "sim", "model": "m-mid", "input_usd_per_mtok": 2.0},
            {"name": "big", "upstream": "sim", "model": "m-big", "input_usd_per_mtok": 10.0},
        ],
        "tiers": [
            {"name": "small", "deployments": ["mini"], "fallbacks": ["medium"]},
            {"name": "medium", "deployments": ["mid-a", "mid-b"], "aliases": ["smart"]},
            {"name": "large", "deployments": ["big"]},
        ],
        "rules": [
            {"name": "long", "when": {"input_tokens_over": 12000}, "tier": "large"},
            {"name": "vip", "when": {"user_tier_in": ["enterprise"]}, "tier": "medium"},
            {"name": "tagged", "when": {"tags_any": ["quality"]}, "tier": "large", "shadow": True},
        ],
        "experiments": [
            {
                "name": "mid-split",
                "variants": [
                    {"name": "a", "weight": 50, "deployment": "mid-a"},
                    {"name": "b", "weight": 50, "deployment": "mid-b"},
                ],
                "tiers": ["medium"],
            },
            {
                "name": "canary",
                "subject": "key",
                "variants": [
                    {"name": "big", "weight": 5, "tier": "large"},
                    {"name": "control", "weight": 95},
                ],
            },
        ],
        "breaker": {"min_calls": 3, "cooldown_seconds": 10, "half_open_calls": 1},
    }
    base.update(overrides)
    return base


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rules_aliases_and_default_pick_the_tier() -> None:
    router = Router(spec(experiments=[]), seed=1)
    assert router.decide(RouteFacts(input_tokens=20000)).tier == "large"
    vip = router.decide(RouteFacts(user_tier="enterprise"))
    assert (vip.tier, vip.matched_by, vip.rule) == ("medium", "rule", "vip")
    assert router.decide(RouteFacts(model="smart")).matched_by == "alias"
    default = router.decide(RouteFacts())
    assert (default.tier, default.matched_by) == ("small", "default")
    assert default.candidates[0] == "mini"
    assert sorted(default.candidates[1:]) == ["mid-a", "mid-b"]
    assert default.escalation_tier == "medium"


def test_shadow_rule_explains_itself_without_acting() -> None:
    router = Router(spec(experiments=[]), seed=1)
    decision = router.decide(RouteFacts(tags=["quality"]))
    assert decision.tier == "small"
    assert decision.shadow_rules == [("tagged", "large")]
    assert "shadow_rules=tagged:large" in decision.explain()


def test_context_window_drop_is_explained() -> None:
    router = Router(spec(experiments=[]), seed=1)
    decision = router.decide(RouteFacts(input_tokens=11000, max_output_tokens=6000))
    assert "mini" not in decision.candidates
    assert decision.dropped == [("mini", "context_window", False)]
    assert "dropped=mini:context_window" in decision.explain()


def test_breaker_opens_recovers_with_an_injected_clock() -> None:
    clock = FakeClock()
    router = Router(spec(experiments=[]), seed=1, clock=clock)
    for _ in range(3):
        assert router.start("mini")
        router.record("mini", False)
    assert router.decide(RouteFacts()).dropped == [("mini", "breaker_open", False)]
    assert router.snapshot()["deployments"]["mini"]["breaker"]["phase"]["state"] == "open"

    clock.now += 10
    assert router.decide(RouteFacts()).candidates[0] == "mini"
    assert router.start("mini")
    assert not router.start("mini")
    router.record("mini", True, 0.05)
    state = router.snapshot()["deployments"]["mini"]
    assert state["breaker"]["phase"] == {"state": "closed"}
    assert state["latency_ewma"] == pytest.approx(0.05)


def test_invalid_specs_raise_config_errors_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"routing\.tiers\.0\.strategy"):
        Router(spec(tiers=[{"name": "t", "deployments": ["mini"], "strategy": "fastest"}]))
    with pytest.raises(ConfigError, match=r"rules\[0\]\.tier"):
        Router(spec(rules=[{"name": "r", "tier": "huge"}]))
    bad = spec()
    bad["deployments"][0]["weight"] = -1
    with pytest.raises(ConfigError, match=r"routing\.deployments\.0\.weight"):
        Router(bad)


def test_unknown_names_raise_not_found() -> None:
    router = Router(spec())
    with pytest.raises(NotFoundError, match="deployment"):
        router.record("nope", True)
    with pytest.raises(NotFoundError, match="tier"):
        router.decide_tier(RouteFacts(), "huge")


@given(st.text(max_size=20), st.text(max_size=40))
def test_bucket_is_the_documented_hash(salt: str, subject: str) -> None:
    assert route_bucket(salt, subject) == reference_bucket(salt, subject)


@settings(max_examples=50, deadline=None)
@given(
    subject=st.text(min_size=1, max_size=30),
    other_weights=st.tuples(st.integers(0, 100), st.integers(1, 100)),
    seed=st.integers(0, 2**64 - 1),
)
def test_assignment_survives_restarts_and_other_experiments_changes(
    subject: str, other_weights: tuple[int, int], seed: int
) -> None:
    before = Router(spec(), seed=1).decide(RouteFacts(user=subject, key=subject, model="smart"))
    changed = spec()
    changed["experiments"][1]["variants"][0]["weight"] = other_weights[0]
    changed["experiments"][1]["variants"][1]["weight"] = other_weights[1]
    after = Router(changed, seed=seed).decide(RouteFacts(user=subject, key=subject, model="smart"))
    mid_split = [a for a in before.assignments if a[0] == "mid-split"]
    assert mid_split
    assert mid_split == [a for a in after.assignments if a[0] == "mid-split"]


@pytest.mark.parametrize("weights", [(50, 50), (5, 95), (1, 2, 7)])
def test_observed_split_matches_weights(weights: tuple[int, ...]) -> None:
    variants = [{"name": f"v{i}", "weight": w} for i, w in enumerate(weights)]
    router = Router(spec(experiments=[{"name": "split", "variants": variants}]), seed=3)
    n = 20000
    for i in range(n):
        router.decide(RouteFacts(user=f"user-{i}"))
    counts = router.snapshot()["experiments"]["split"]
    total = sum(weights)
    for i, w in enumerate(weights):
        p = w / total
        sigma = math.sqrt(n * p * (1 - p))
        # Five standard deviations: a correct hash fails this about once in two million runs.
        assert abs(counts[f"v{i}"] - n * p) < 5 * sigma, (counts, weights)


def test_canary_ramp_keeps_its_subjects() -> None:
    def canary_keys(weight: int) -> set[str]:
        exp = {
            "name": "canary",
            "variants": [
                {"name": "new", "weight": weight},
                {"name": "old", "weight": 100 - weight},
            ],
        }
        router = Router(spec(experiments=[exp]))
        keys = (f"u{i}" for i in range(3000))
        return {k for k in keys if router.decide(RouteFacts(user=k)).assignments[0][1] == "new"}

    small, large = canary_keys(5), canary_keys(20)
    assert small < large
    assert 100 < len(small) < 200


def test_variant_switches_tier_and_experiments_count_assignments() -> None:
    router = Router(spec(), seed=5)
    tiers = {router.decide(RouteFacts(key=f"k{i}")).tier for i in range(400)}
    assert tiers == {"small", "large"}
    counts = router.snapshot()["experiments"]["canary"]
    assert counts["big"] + counts["control"] == 400


def test_shadow_experiment_and_request_id_fallback() -> None:
    exp = {"name": "s", "shadow": True, "variants": [{"name": "x", "weight": 1, "tier": "large"}]}
    router = Router(spec(experiments=[exp]))
    decision = router.decide(RouteFacts(request_id="req-1"))
    assert decision.tier == "small"
    assert decision.assignments == [("s", "x", True)]
    assert router.decide(RouteFacts()).assignments == []
