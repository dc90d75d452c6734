"""Routing end to end: the real gateway in front of faulty upstreams.

The simulated provider injects its faults (429 with Retry-After, 500, hang, stream cut);
the scripted loopback upstream of ``routing_upstream`` plays sequences the simulated one
cannot (fail twice, then recover; a quota error).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from aiofast import ConfigError
from aiofast.policy import Policy, policy_from_mapping
from aiofast.routing import RouteFacts
from aiofast.routing.stages import engine_for
from gateway_support import FAST_SIMULATION, chat, running, sse_data
from routing_upstream import FaultyUpstream, start

QUOTA = orjson.dumps({"error": {"message": "no money", "code": "insufficient_quota"}})


def policy(
    *,
    faults: dict[str, Any] | None = None,
    timeouts: dict[str, Any] | None = None,
    scripted: str | None = None,
    flaky: list[str] | None = None,
    routing: dict[str, Any] | None = None,
    **extra: Any,
) -> Policy:
    """Tiers small < medium < large on a healthy simulated upstream, plus a tier `flaky`
    whose first choice is a faulty deployment (simulated faults or a scripted server)."""
    upstreams: list[dict[str, Any]] = [
        {"name": "sim", "kind": "simulated", "simulated": FAST_SIMULATION},
        {
            "name": "faulty",
            "kind": "simulated",
            "simulated": {**FAST_SIMULATION, "faults": faults or {}},
            "timeouts": timeouts or {},
        },
    ]
    if scripted is not None:
        upstreams.append({"name": "scripted", "kind": "openai", "base_url": scripted})
    deployments = [
        {"name": "small", "upstream": "sim", "model": "gpt-4o-mini"},
        {"name": "medium", "upstream": "sim", "model": "gpt-4o"},
        {"name": "large", "upstream": "sim", "model": "o3"},
        {"name": "bad", "upstream": "scripted" if scripted else "faulty", "model": "gpt-4o-mini"},
    ]
    deployments[3]["weight"] = 1000.0
    data: dict[str, Any] = {
        "version": "routing-test",
        "upstreams": upstreams,
        "deployments": deployments,
        "tiers": {
            "flaky": flaky or ["bad", "small"],
            "small": ["small"],
            "medium": ["medium"],
            "large": ["large"],
        },
        "ledger": {"path": ""},
        "server": {"default_tier": "small"},
        "routing": {
            "tiers": {"flaky": {"escalate_to": "medium"}},
            "breaker": {"min_calls": 100},
            "retry": {"base_delay": 0.01},
            **(routing or {}),
        },
        **extra,
    }
    return policy_from_mapping(data)


@pytest.fixture
async def scripted() -> AsyncIterator[FaultyUpstream]:
    server = FaultyUpstream()
    runner = await start(server)
    yield server
    await runner.cleanup()


def route_of(headers: Any) -> dict[str, str]:
    return dict(part.split("=", 1) for part in headers["x-aiofast-route"].split("; "))


async def test_429_retry_after_is_waited_for_then_falls_back() -> None:
    faults = {"error_rate": 1.0, "kinds": ["429"], "retry_after": 0.4}
    routing = {"retry": {"retries_per_deployment": 1}}
    async with running(policy(faults=faults, routing=routing)) as gateway:
        started = time.monotonic()
        status, headers, _ = await gateway.post("/v1/chat/completions", chat("flaky"))
        elapsed = time.monotonic() - started
        event = gateway.event(headers["x-aiofast-request-id"])
    assert status == 200
    assert route_of(headers)["served_by"] == "small"
    assert route_of(headers)["attempts"] == "3"
    # One retry of `bad`, which the upstream asked to wait 0.4 s for.
    assert elapsed >= 0.4
    assert event["attempts"] == 3
    assert event["deployment"] == "small"


async def test_retry_after_is_waited_for_on_the_same_deployment(
    scripted: FaultyUpstream,
) -> None:
    scripted.script("bad", ("status", 429, {"retry-after": "0.5"}, b"{}"))
    async with running(policy(scripted=f"{scripted.url}/bad")) as gateway:
        status, headers, _ = await gateway.post("/v1/chat/completions", chat("flaky"))
    first, second = scripted.arrivals["bad"]
    assert status == 200
    assert second - first >= 0.5
    assert route_of(headers)["served_by"] == "bad"


async def test_500_before_the_first_byte_falls_back_on_streams() -> None:
    faults = {"error_rate": 1.0, "kinds": ["500"]}
    async with running(policy(faults=faults)) as gateway:
        status, headers, body = await gateway.post(
            "/v1/chat/completions", chat("flaky", stream=True)
        )
    assert status == 200
    assert sse_data(body)[-1] == "[DONE]"
    assert route_of(headers)["served_by"] == "small"


async def test_cut_after_the_first_byte_ends_with_an_error_event() -> None:
    faults = {"error_rate": 1.0, "kinds": ["cut"], "cut_after_chunks": 2}
    async with running(policy(faults=faults)) as gateway:
        status, headers, body = await gateway.post(
            "/v1/chat/completions", chat("flaky", stream=True)
        )
        event = gateway.event(headers["x-aiofast-request-id"])
    payloads = sse_data(body)
    assert status == 200
    assert "[DONE]" not in payloads
    assert "error" in orjson.loads(payloads[-1])
    assert route_of(headers)["served_by"] == "bad"
    assert event["attempts"] == 1
    assert event["status"] == 502


async def test_hang_times_out_and_falls_back() -> None:
    faults = {"error_rate": 1.0, "kinds": ["hang"]}
    timeouts = {"first_byte": 0.3, "total": 0.5}
    routing = {"retry": {"retries_per_deployment": 0}}
    async with running(policy(faults=faults, timeouts=timeouts, routing=routing)) as gateway:
        started = time.monotonic()
        status, headers, _ = await gateway.post("/v1/chat/completions", chat("flaky"))
        elapsed = time.monotonic() - started
    assert status == 200
    assert route_of(headers)["served_by"] == "small"
    assert 0.3 <= elapsed < 3


async def test_insufficient_quota_is_not_retried(scripted: FaultyUpstream) -> None:
    scripted.script("bad", ("status", 429, {}, QUOTA))
    async with running(policy(scripted=f"{scripted.url}/bad")) as gateway:
        status, headers, _ = await gateway.post("/v1/chat/completions", chat("flaky"))
    assert status == 200
    assert scripted.calls("bad") == 1
    assert route_of(headers)["served_by"] == "small"


async def test_breaker_opens_and_recovers(scripted: FaultyUpstream) -> None:
    scripted.script("bad", *[("status", 500, {}, b"")] * 2)
    routing = {
        "breaker": {"min_calls": 2, "cooldown_seconds": 0.4, "half_open_calls": 1},
        "retry": {"retries_per_deployment": 0},
    }
    async with running(policy(scripted=f"{scripted.url}/bad", routing=routing)) as gateway:
        for _ in range(2):
            _, headers, _ = await gateway.post("/v1/chat/completions", chat("flaky"))
            assert route_of(headers)["served_by"] == "small"
        _, headers, _ = await gateway.post("/v1/chat/completions", chat("flaky"))
        assert route_of(headers)["dropped"] == "bad:breaker_open"
        assert scripted.calls("bad") == 2

        await asyncio.sleep(0.45)
        _, headers, _ = await gateway.post("/v1/chat/completions", chat("flaky"))
        assert route_of(headers)["served_by"] == "bad"
        _, headers, _ = await gateway.post("/v1/chat/completions", chat("flaky"))
        assert "dropped" not in route_of(headers)


async def test_cascade_escalates_once_on_invalid_json() -> None:
    body = chat("small", response_format={"type": "json_object"})
    async with running(policy()) as gateway:
        status, headers, answer = await gateway.post("/v1/chat/completions", body)
        event = gateway.event(headers["x-aiofast-request-id"])
    route = route_of(headers)
    assert status == 200
    # The simulated provider writes prose, so the medium tier fails too: no second escalation.
    assert route["cascade"] == "invalid_json:medium"
    assert (route["served_by"], route["attempts"]) == ("medium", "2")
    assert orjson.loads(answer)["model"] == "gpt-4o"
    assert (event["attempts"], event["deployment"]) == (2, "medium")


async def test_cascade_answer_from_the_larger_tier(scripted: FaultyUpstream) -> None:
    scripted.script("bad", ("text", '{"answer": 42}'))
    body = chat("small", response_format={"type": "json_object"})
    tiers = {"flaky": ["small"], "small": ["small"], "medium": ["bad"], "large": ["large"]}
    extra = {"tiers": tiers}
    async with running(policy(scripted=f"{scripted.url}/bad", **extra)) as gateway:
        status, headers, answer = await gateway.post("/v1/chat/completions", body)
    assert status == 200
    content = orjson.loads(answer)["choices"][0]["message"]["content"]
    assert orjson.loads(content) == {"answer": 42}
    assert route_of(headers)["cascade"] == "invalid_json:medium"


async def test_no_request_makes_more_attempts_than_the_cap() -> None:
    faults = {"error_rate": 1.0, "kinds": ["500", "529", "429"], "retry_after": 0}
    routing = {"retry": {"max_attempts": 3, "retries_per_deployment": 5, "base_delay": 0.001}}
    async with running(policy(faults=faults, routing=routing, flaky=["bad"])) as gateway:
        for _ in range(5):
            status, headers, _ = await gateway.post("/v1/chat/completions", chat("flaky"))
            event = gateway.event(headers["x-aiofast-request-id"])
            assert status in (429, 502, 529)
            assert event["attempts"] == 3


async def test_rules_and_experiments_from_the_policy_file() -> None:
    routes = [{"name": "long", "when": {"input_tokens_over": 50}, "tier": "large"}]
    experiments = [
        {
            "name": "mid",
            "tiers": ["small"],
            "variants": [{"name": "up", "weight": 1, "tier": "medium"}],
        }
    ]
    async with running(policy(routes=routes, experiments=experiments)) as gateway:
        _, long_headers, _ = await gateway.post(
            "/v1/chat/completions", chat("small", text="word " * 80)
        )
        _, short_headers, _ = await gateway.post("/v1/chat/completions", chat("small"))
        event = gateway.event(short_headers["x-aiofast-request-id"])
    assert long_headers["x-aiofast-tier"] == "large"
    assert route_of(long_headers)["by"] == "rule:long"
    assert route_of(short_headers)["exp"] == "mid:up"
    assert short_headers["x-aiofast-tier"] == "medium"
    assert "exp=mid:up" in event["route"]


async def test_stream_cut_before_the_first_byte_falls_back(scripted: FaultyUpstream) -> None:
    scripted.script("bad", ("cut", 0))
    routing = {"retry": {"retries_per_deployment": 0}}
    async with running(policy(scripted=f"{scripted.url}/bad", routing=routing)) as gateway:
        status, headers, body = await gateway.post(
            "/v1/chat/completions", chat("flaky", stream=True)
        )
    assert status == 200
    assert sse_data(body)[-1] == "[DONE]"
    assert route_of(headers)["served_by"] == "small"
    assert route_of(headers)["attempts"] == "2"


async def test_a_budget_near_exhaustion_downgrades_unless_a_rule_claims() -> None:
    limits = [
        {
            "scope": "global",
            "budget": {"usd": 1.0, "per": "day"},
            "downgrade_to": "small",
            "downgrade_at": 0.000001,
        }
    ]
    routes = [{"name": "vip", "when": {"model_in": ["large"]}, "tier": "large"}]
    async with running(policy(limits=limits, routes=routes)) as gateway:
        _, first, _ = await gateway.post("/v1/chat/completions", chat("medium"))
        _, second, _ = await gateway.post("/v1/chat/completions", chat("medium"))
        _, ruled, _ = await gateway.post("/v1/chat/completions", chat("large"))
    # Every reservation crosses the (tiny) downgrade threshold of the budget.
    for headers in (first, second):
        assert (headers["x-aiofast-tier"], route_of(headers)["by"]) == ("small", "downgrade")
    assert (ruled["x-aiofast-tier"], route_of(ruled)["by"]) == ("large", "rule:vip")


def test_the_ladder_orders_cascades_and_leaves_other_tiers_alone() -> None:
    settings = policy(routing={"ladder": ["small", "medium", "large"]})
    engine = engine_for(settings)
    climbs = {t.name: (t.escalate_to, t.escalates) for t in engine.spec.tiers}
    assert climbs == {
        "flaky": ("medium", True),  # its own [routing.tiers.flaky] escalate_to
        "small": ("medium", True),
        "medium": ("large", True),
        "large": (None, False),
    }
    from_large = engine.decide(RouteFacts(model="large"))
    assert from_large.escalation_tier is None


def test_unknown_tier_names_in_routing_sections_fail_the_start() -> None:
    with pytest.raises(ConfigError, match=r"routing\.ladder: unknown names \['huge'\]"):
        engine_for(policy(routing={"ladder": ["small", "huge"]}))
