"""Cascade billing end to end: the real gateway in front of the simulated provider.

The simulated provider writes prose, so a request asking for a JSON object fails its
constraint on the small tier and is retried once on the medium tier. Both answers were
billed by the provider; both must be charged: in the request's cost header, in the limits'
spend, in the ledger (one row per answer, each charged to its own model) and in metrics.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from aiofast.auth import digest
from aiofast.ledger import SUPERSEDED_ERROR
from gateway_support import chat, running, simulated_policy

ALICE, ADMIN = "sk-alice-routefix-test", "sk-admin-routefix-test"
BEARER = {"Authorization": f"Bearer {ALICE}"}
JSON_ASKED = {"response_format": {"type": "json_object"}}


def _policy(**extra: Any) -> Any:
    return simulated_policy(
        extra={
            "keys": [{"digest": digest(ALICE), "name": "alice-key", "user": "alice"}],
            "admin_keys": [{"digest": digest(ADMIN), "name": "ops"}],
            "routing": {"ladder": ["small", "medium", "large"]},
            **extra,
        }
    )


async def test_both_answers_of_a_cascade_are_billed_each_to_its_own_model() -> None:
    async with running(_policy()) as gateway:
        status, headers, answer = await gateway.post(
            "/v1/chat/completions", chat("small", **JSON_ASKED), BEARER
        )
        request_id = headers["x-aiofast-request-id"]
        rows = {e["request_id"]: e for e in gateway.events()}
        by_model = {r["model"]: r for r in gateway.pipeline.ledger.summarize(["model"])}
        _, _, metrics = await gateway.get("/aiofast/metrics")
    assert status == 200
    assert orjson.loads(answer)["model"] == "gpt-4o"
    served, first = rows[request_id], rows[f"{request_id}.superseded-1"]
    assert (served["model"], served["deployment"], served["error_type"]) == ("gpt-4o", "medium", "")
    assert (first["model"], first["deployment"], first["tier"]) == ("gpt-4o-mini", "small", "small")
    assert (first["parent_id"], first["error_type"]) == (request_id, SUPERSEDED_ERROR)
    assert first["route"] == "superseded: invalid_json"
    assert first["output_tokens"] > 0
    assert first["cost_usd"] > 0
    # The header charges both answers; the ledger rows add up to it, model by model.
    total = served["cost_usd"] + first["cost_usd"]
    assert float(headers["x-aiofast-cost-usd"]) == pytest.approx(total, rel=1e-9)
    assert int(headers["x-aiofast-input-tokens"]) == 2 * served["input_tokens"]
    assert by_model["gpt-4o-mini"]["cost_usd"] == pytest.approx(first["cost_usd"], rel=1e-6)
    assert by_model["gpt-4o"]["cost_usd"] == pytest.approx(served["cost_usd"], rel=1e-6)
    # One request, no error: the superseded row is spend, not traffic.
    assert (by_model["gpt-4o"]["requests"], by_model["gpt-4o-mini"]["requests"]) == (1, 0)
    assert by_model["gpt-4o-mini"]["errors"] == 0
    text = metrics.decode()
    assert 'aiofast_cost_usd_total{model="gpt-4o-mini",tier="small"}' in text
    assert 'aiofast_requests_total{api="chat",model="gpt-4o-mini"' not in text


async def test_the_budget_spends_both_answers_of_a_cascade() -> None:
    limits = [{"name": "alice-day", "scope": "user", "budget": {"usd": 5, "per": "day"}}]
    async with running(_policy(limits=limits)) as gateway:
        status, headers, _ = await gateway.post(
            "/v1/chat/completions", chat("small", **JSON_ASKED), BEARER
        )
        _, _, usage = await gateway.get("/aiofast/usage", {"Authorization": f"Bearer {ADMIN}"})
        rows = gateway.events()
    assert status == 200
    charged = float(headers["x-aiofast-cost-usd"])
    assert charged == pytest.approx(sum(r["cost_usd"] for r in rows), rel=1e-9)
    budget = orjson.loads(usage)["limits"]["limits"][0]["entries"][0]["budget"]
    assert budget["reserved_usd"] == 0
    assert budget["spent_usd"] == pytest.approx(charged, rel=1e-6)


async def test_a_request_without_cascade_has_one_row_and_its_own_cost() -> None:
    async with running(_policy()) as gateway:
        status, headers, _ = await gateway.post("/v1/chat/completions", chat("small"), BEARER)
        rows = gateway.events()
    assert status == 200
    assert [r["request_id"] for r in rows] == [headers["x-aiofast-request-id"]]
    assert float(headers["x-aiofast-cost-usd"]) == pytest.approx(rows[0]["cost_usd"], rel=1e-9)
