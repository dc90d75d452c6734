"""``[[limits]]`` end to end through the real gateway on loopback: refusal bodies and
headers, settlement after answers and failures, a budget downgrade, shadow mode."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson
import pytest

from aiofast.auth import digest
from aiofast.errors import ConfigError
from aiofast.limits import RequestContext
from aiofast.limits import stage as limits_stage
from gateway_support import chat, running, simulated_policy

ALICE, ADMIN = "sk-alice-limits-test", "sk-admin-limits-test"
BEARER = {"Authorization": f"Bearer {ALICE}"}


def _policy(limits: list[dict[str, Any]], **extra: Any) -> Any:
    return simulated_policy(
        extra={
            "keys": [
                {"digest": digest(ALICE), "name": "alice-key", "user": "alice", "team": "search"}
            ],
            "admin_keys": [{"digest": digest(ADMIN), "name": "ops"}],
            "server": {"default_tier": "small", "open_routes": ["health", "metrics"]},
            "limits": limits,
            **extra,
        }
    )


async def test_refusal_is_an_openai_429_naming_limit_and_scope_with_headers() -> None:
    policy = _policy([{"name": "team-rpm", "scope": "team", "requests_per_minute": 2, "burst": 2}])
    async with running(policy) as gateway:
        first = await gateway.post("/v1/chat/completions", chat(), BEARER)
        second = await gateway.post("/v1/chat/completions", chat(), BEARER)
        status, headers, body = await gateway.post("/v1/chat/completions", chat(), BEARER)
    assert first[0] == second[0] == 200
    assert first[1]["x-ratelimit-limit-requests"] == "2"
    assert first[1]["x-ratelimit-remaining-requests"] == "1"
    assert first[1]["x-ratelimit-reset-requests"] == "30s"
    assert second[1]["x-ratelimit-remaining-requests"] == "0"
    assert status == 429
    error = orjson.loads(body)["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert error["type"] == "rate_limit_error"
    assert "team-rpm" in error["message"]
    assert "team 'search'" in error["message"]
    assert headers["Retry-After"] == "30"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert re.fullmatch(r"59\.\d+s|1m0s", headers["x-ratelimit-reset-requests"])


async def test_token_limit_reserves_max_tokens_and_refuses_a_request_that_cannot_fit() -> None:
    policy = _policy([{"scope": "key", "tokens_per_minute": 1000}])
    async with running(policy) as gateway:
        status, headers, _ = await gateway.post(
            "/v1/chat/completions", chat(max_tokens=100), BEARER
        )
        assert status == 200
        assert headers["x-ratelimit-limit-tokens"] == "1000"
        too_large, headers, body = await gateway.post(
            "/v1/chat/completions", chat(max_tokens=5000), BEARER
        )
    assert too_large == 429
    assert orjson.loads(body)["error"]["code"] == "request_too_large"
    assert "Retry-After" not in headers
    assert headers["x-should-retry"] == "false"


async def test_exhausted_monthly_budget_has_its_own_code_and_no_retry_after() -> None:
    policy = _policy(
        [{"name": "monthly", "scope": "user", "budget": {"usd": 1e-5, "per": "month"}}]
    )
    async with running(policy) as gateway:
        answers = []
        for _ in range(20):
            answers.append(await gateway.post("/v1/chat/completions", chat(max_tokens=1), BEARER))
            if answers[-1][0] != 200:
                break
    status, headers, body = answers[-1]
    assert answers[0][0] == 200
    assert status == 429
    assert orjson.loads(body)["error"]["code"] == "insufficient_quota"
    assert "Retry-After" not in headers
    assert headers["x-should-retry"] == "false"


async def test_spend_is_settled_after_the_answer_and_shown_in_usage_and_metrics() -> None:
    policy = _policy(
        [
            {
                "name": "team-day",
                "scope": "team",
                "budget": {"usd": 5, "per": "day"},
                "concurrency": 1,
            }
        ]
    )
    async with running(policy) as gateway:
        status, headers, _ = await gateway.post("/v1/chat/completions", chat(), BEARER)
        assert status == 200
        charged = float(headers["x-aiofast-cost-usd"])
        assert charged > 0
        # Concurrency 1: a second request passes only because the first was settled.
        assert (await gateway.post("/v1/chat/completions", chat(), BEARER))[0] == 200
        _, _, usage = await gateway.get("/aiofast/usage", {"Authorization": f"Bearer {ADMIN}"})
        _, _, metrics = await gateway.get("/aiofast/metrics")
    budget = orjson.loads(usage)["limits"]["limits"][0]["entries"][0]["budget"]
    assert budget["reserved_usd"] == 0
    assert 0 < budget["spent_usd"] < 2 * charged + 1e-12
    assert 'aiofast_limit_spent_usd{limit="team-day",scope="team",scope_value="search"}' in (
        metrics.decode()
    )


async def test_failed_upstream_calls_and_streams_release_their_reservation() -> None:
    policy = _policy(
        [{"name": "one-at-a-time", "scope": "key", "concurrency": 1}],
    )
    faulty = simulated_policy(
        faults={"error_rate": 1.0, "kinds": ["500"]},
        extra={
            "keys": [{"digest": digest(ALICE), "name": "alice-key"}],
            "limits": [{"name": "one-at-a-time", "scope": "key", "concurrency": 1}],
        },
    )
    async with running(faulty) as gateway:
        for _ in range(3):
            status, _, _ = await gateway.post("/v1/chat/completions", chat("faulty"), BEARER)
            assert status >= 500
        status, _, _ = await gateway.post("/v1/chat/completions", chat(), BEARER)
        assert status == 200
    async with running(policy) as gateway:
        async with gateway.session.post(
            gateway.url + "/v1/chat/completions", json=chat(stream=True), headers=BEARER
        ) as response:
            assert response.status == 200
            await response.content.readline()
        # The client left mid-stream; the gateway settles once it notices.
        for _ in range(100):
            status, _, _ = await gateway.post("/v1/chat/completions", chat(), BEARER)
            if status == 200:
                break
            await asyncio.sleep(0.02)
        assert status == 200


async def test_budget_near_exhaustion_downgrades_through_the_routing_rules() -> None:
    policy = _policy(
        [
            {
                "name": "team-day",
                "scope": "team",
                "budget": {"usd": 100, "per": "day"},
                "downgrade_to": "small",
                "downgrade_at": 0.5,
            }
        ],
        routes=[{"name": "save-money", "when": {"downgrade": True}, "tier": "small"}],
    )
    async with running(policy) as gateway:
        status, headers, _ = await gateway.post("/v1/chat/completions", chat("large"), BEARER)
        assert status == 200
        assert headers["x-aiofast-tier"] == "large"
        # Spend half of the budget, as a run of expensive requests would.
        limiter = gateway.pipeline.stages.limiter
        engine = limiter.limiter  # type: ignore[attr-defined]
        held = engine.admit(RequestContext(team="search", cost_usd=60.0))
        engine.settle(held.handle, 0, 0, 60.0)
        status, headers, _ = await gateway.post("/v1/chat/completions", chat("large"), BEARER)
    assert status == 200
    assert headers["x-aiofast-tier"] == "small"


async def test_shadow_limits_never_refuse_but_are_counted() -> None:
    policy = _policy(
        [{"name": "trial", "scope": "user", "requests_per_minute": 1, "burst": 1, "mode": "shadow"}]
    )
    async with running(policy) as gateway:
        answers = [await gateway.post("/v1/chat/completions", chat(), BEARER) for _ in range(3)]
        _, _, metrics = await gateway.get("/aiofast/metrics")
    assert [status for status, _, _ in answers] == [200, 200, 200]
    assert all("x-ratelimit-limit-requests" not in headers for _, headers, _ in answers)
    assert (
        'aiofast_limit_refusals_total{kind="requests",limit="trial",mode="shadow",scope="user"} 2.0'
        in metrics.decode()
    )


async def test_unsettled_reservations_expire_in_the_background(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(limits_stage, "EXPIRE_EVERY_S", 0.05)
    policy = _policy(
        [
            {
                "name": "team-day",
                "scope": "team",
                "concurrency": 1,
                "budget": {"usd": 5, "per": "day"},
            }
        ],
        limiter={"reservation_ttl_seconds": 0.2},
    )
    async with running(policy) as gateway:
        engine = gateway.pipeline.stages.limiter.limiter  # type: ignore[attr-defined]
        # A handler that admitted and crashed before settling: nothing else touches the team.
        lost = engine.admit(RequestContext(team="search", cost_usd=0.25))
        assert lost.admitted
        for _ in range(100):
            await asyncio.sleep(0.02)
            if engine.outstanding() == 0:
                break
        _, _, usage = await gateway.get("/aiofast/usage", {"Authorization": f"Bearer {ADMIN}"})
        _, _, metrics = await gateway.get("/aiofast/metrics")
        # The slot it held is free again: a real request passes.
        status, _, _ = await gateway.post("/v1/chat/completions", chat(), BEARER)
    report = orjson.loads(usage)["limits"]
    assert report["reservations_expired"] == 1
    entry = report["limits"][0]["entries"][0]
    assert entry["in_flight"] == 0
    assert entry["budget"]["reserved_usd"] == 0
    assert entry["budget"]["spent_usd"] == pytest.approx(0.25)
    assert "aiofast_limit_reservations_expired_total 1.0" in metrics.decode()
    assert status == 200


def test_policy_errors_in_limits_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"limits\.0\.requests_per_minute"):
        _policy([{"scope": "team", "requests_per_minute": 0}])
    with pytest.raises(ConfigError, match=r"limits\.0\.downgrade_to: unknown tier 'tiny'"):
        _policy([{"scope": "team", "budget": {"usd": 1, "per": "day"}, "downgrade_to": "tiny"}])
