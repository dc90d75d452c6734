"""Bad input, virtual keys, admin routes, outcomes and the ledger across a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from aiofast.auth import digest
from gateway_support import chat, running, simulated_policy

BAD_BODIES = [
    (b"{not json", None, "parse the JSON"),
    (b"[1, 2]", None, "JSON object"),
    (orjson.dumps({"messages": [{"role": "user", "content": "x"}]}), "model", "'model'"),
    (orjson.dumps({"model": "small"}), "messages", "'messages'"),
    (orjson.dumps({"model": "small", "messages": []}), "messages", "non-empty"),
    (orjson.dumps({"model": 3, "messages": [{"role": "user"}]}), "model", "string"),
    (orjson.dumps({"model": "small", "messages": ["hi"]}), "messages[0]", "role"),
    (orjson.dumps(chat(stream="yes")), "stream", "boolean"),
    (orjson.dumps(chat(max_tokens="10")), "max_tokens", "integer"),
]


@pytest.mark.parametrize(("body", "param", "words"), BAD_BODIES)
async def test_bad_bodies_get_400_naming_the_parameter(
    body: bytes, param: str | None, words: str
) -> None:
    async with running(simulated_policy()) as gateway:
        status, headers, raw = await gateway.post("/v1/chat/completions", body)
        event = gateway.event(headers["x-aiofast-request-id"])
    error = orjson.loads(raw)["error"]
    assert status == 400
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert words in error["message"]
    assert event["status"] == 400


async def test_oversized_body_gets_413() -> None:
    policy = simulated_policy(extra={"server": {"max_body_bytes": 2048}})
    async with running(policy) as gateway:
        status, _, raw = await gateway.post("/v1/chat/completions", chat(text="x" * 5000))
    assert status == 413
    assert "server.max_body_bytes" in orjson.loads(raw)["error"]["message"]


async def test_unknown_model_gets_404_model_not_found() -> None:
    async with running(simulated_policy()) as gateway:
        status, _, raw = await gateway.post("/v1/chat/completions", chat("gpt-7"))
    error = orjson.loads(raw)["error"]
    assert status == 404
    assert error["code"] == "model_not_found"
    assert "small" in error["message"]


async def test_unknown_route_and_method_answer_in_json() -> None:
    async with running(simulated_policy()) as gateway:
        status, _, raw = await gateway.get("/v1/nothing")
        assert status == 404
        assert "error" in orjson.loads(raw)
        status, _, raw = await gateway.get("/v1/chat/completions")
    assert status == 405
    assert "error" in orjson.loads(raw)


async def test_anthropic_messages_errors_use_the_anthropic_format() -> None:
    async with running(simulated_policy()) as gateway:
        status, _, raw = await gateway.post("/v1/messages", {"model": "small", "messages": []})
    error = orjson.loads(raw)
    assert status == 400
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"


ALICE, ADMIN = "sk-alice-test-key", "sk-admin-test-key"


def _keyed(**server: Any) -> Any:
    return simulated_policy(
        extra={
            "keys": [
                {"digest": digest(ALICE), "name": "alice-key", "user": "alice", "team": "search"}
            ],
            "admin_keys": [{"digest": digest(ADMIN), "name": "ops"}],
            "server": {"default_tier": "small", **server},
        }
    )


async def test_virtual_keys_identify_the_caller() -> None:
    async with running(_keyed()) as gateway:
        missing, _, body = await gateway.post("/v1/chat/completions", chat())
        assert missing == 401
        assert "API key" in orjson.loads(body)["error"]["message"]
        wrong, _, _ = await gateway.post(
            "/v1/chat/completions", chat(), {"Authorization": "Bearer sk-wrong"}
        )
        assert wrong == 401
        ok, headers, _ = await gateway.post(
            "/v1/chat/completions", chat(), {"Authorization": f"Bearer {ALICE}"}
        )
        assert ok == 200
        anthropic_style, _, _ = await gateway.get("/v1/models", {"x-api-key": ALICE})
        assert anthropic_style == 200
        event = gateway.event(headers["x-aiofast-request-id"])
    assert (event["key"], event["user"], event["team"]) == ("alice-key", "alice", "search")


async def test_admin_routes_need_the_admin_key() -> None:
    async with running(_keyed(open_routes=["health"])) as gateway:
        assert (await gateway.get("/aiofast/health"))[0] == 200
        assert (await gateway.get("/aiofast/metrics"))[0] == 401
        assert (await gateway.get("/aiofast/usage", {"Authorization": f"Bearer {ALICE}"}))[0] == 401
        status, _, _ = await gateway.get("/aiofast/usage", {"Authorization": f"Bearer {ADMIN}"})
        assert status == 200
        status, _, _ = await gateway.get("/aiofast/metrics", {"Authorization": f"Bearer {ADMIN}"})
        assert status == 200


async def test_admin_routes_refused_when_keys_exist_but_no_admin_key() -> None:
    policy = simulated_policy(
        extra={"keys": [{"digest": digest(ALICE)}], "server": {"open_routes": []}}
    )
    async with running(policy) as gateway:
        status, _, body = await gateway.get("/aiofast/usage", {"Authorization": f"Bearer {ALICE}"})
    assert status == 403
    assert "admin_keys" in orjson.loads(body)["error"]["message"]


async def test_outcomes_give_cost_per_successful_outcome() -> None:
    async with running(simulated_policy()) as gateway:
        ids = []
        for text in ("first", "second", "third"):
            _, headers, _ = await gateway.post("/v1/chat/completions", chat(text=text))
            ids.append(headers["x-aiofast-request-id"])
        outcomes = [
            {"request_id": ids[0], "success": True},
            {"request_id": ids[1], "success": False},
        ]
        status, _, body = await gateway.post("/aiofast/outcomes", {"outcomes": outcomes})
        assert (status, orjson.loads(body)) == (200, {"recorded": 2})
        bad, _, _ = await gateway.post("/aiofast/outcomes", {"request_id": ids[2]})
        assert bad == 400
        status, _, body = await gateway.get("/aiofast/usage?group_by=tier,user&since=1h")
    rows = orjson.loads(body)["rows"]
    assert len(rows) == 1
    row = rows[0]
    assert (row["tier"], row["requests"], row["successes"], row["failures"]) == ("small", 3, 1, 1)
    assert row["cost_per_success_usd"] == pytest.approx(row["cost_usd"])


async def test_usage_rejects_unknown_groups() -> None:
    async with running(simulated_policy()) as gateway:
        status, _, body = await gateway.get("/aiofast/usage?group_by=colour")
    assert status == 400
    assert orjson.loads(body)["error"]["param"] == "group_by"


async def test_ledger_survives_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "usage.sqlite")
    async with running(simulated_policy(ledger_path=path)) as gateway:
        for _ in range(5):
            await gateway.post("/v1/chat/completions", chat(stream=True))
        await gateway.post("/v1/chat/completions", chat("medium"))
    async with running(simulated_policy(ledger_path=path)) as gateway:
        await gateway.post("/v1/chat/completions", chat("large"))
        status, _, body = await gateway.get("/aiofast/usage?group_by=tier")
    rows = {row["tier"]: row["requests"] for row in orjson.loads(body)["rows"]}
    assert status == 200
    assert rows == {"small": 5, "medium": 1, "large": 1}


@pytest.mark.parametrize("bodies", ["off", "hashed", "redacted", "full"])
async def test_one_json_log_line_per_request_bodies_as_the_policy_says(
    bodies: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret_prompt = "my card is 4111 1111 1111 1111"
    policy = simulated_policy(extra={"logging": {"bodies": bodies}})
    with caplog.at_level("INFO", logger="aiofast.request"):
        async with running(policy) as gateway:
            _, headers, _ = await gateway.post("/v1/chat/completions", chat(text=secret_prompt))
    lines = [r for r in caplog.records if r.name == "aiofast.request"]
    assert len(lines) == 1
    line = orjson.loads(lines[0].getMessage())
    assert line["request_id"] == headers["x-aiofast-request-id"]
    assert line["policy_version"] == "test-1"
    assert line["output_tokens"] > 0
    assert (secret_prompt in lines[0].getMessage()) == (bodies == "full")
    if bodies == "off":
        assert "request" not in line
    elif bodies == "hashed":
        assert line["request"].startswith("sha256:")
    elif bodies == "redacted":
        assert line["request"] == [{"role": "user", "chars": len(secret_prompt)}]
