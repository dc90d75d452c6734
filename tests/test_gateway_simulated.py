"""The gateway on loopback in front of the simulated provider: happy paths and every fault."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest

from aiofast.prices import PriceTable, cost
from gateway_support import chat, running, simulated_policy, sse_data


async def test_chat_answers_with_usage_cost_and_fact_headers() -> None:
    async with running(simulated_policy()) as gateway:
        status, headers, body = await gateway.post("/v1/chat/completions", chat("medium"))
        assert status == 200
        answer = orjson.loads(body)
        usage = answer["usage"]
        assert answer["model"] == "gpt-4o"
        assert headers["x-aiofast-model"] == "gpt-4o"
        assert headers["x-aiofast-tier"] == "medium"
        assert headers["x-aiofast-route"].startswith("tier=medium; by=alias;")
        assert int(headers["x-aiofast-input-tokens"]) == usage["prompt_tokens"]
        assert int(headers["x-aiofast-output-tokens"]) == usage["completion_tokens"]
        expected = cost("gpt-4o", usage, table=PriceTable.default()).usd
        assert expected is not None
        assert expected > 0
        assert float(headers["x-aiofast-cost-usd"]) == pytest.approx(expected, abs=1e-10)
        event = gateway.event(headers["x-aiofast-request-id"])
    assert event["status"] == 200
    assert event["usage_source"] == "provider"
    assert event["tier"] == "medium"
    assert event["policy_version"] == "test-1"
    assert event["cost_usd"] == pytest.approx(expected)


async def test_concrete_model_and_deployment_names_route_too() -> None:
    async with running(simulated_policy()) as gateway:
        _, by_model, _ = await gateway.post("/v1/chat/completions", chat("o3"))
        _, by_deployment, _ = await gateway.post("/v1/chat/completions", chat("large"))
    assert by_model["x-aiofast-route"].startswith("tier=large; by=model:o3;")
    assert by_model["x-aiofast-tier"] == "large"
    assert by_deployment["x-aiofast-model"] == "o3"


async def test_stream_strips_usage_the_client_did_not_ask_for() -> None:
    async with running(simulated_policy()) as gateway:
        status, headers, body = await gateway.post("/v1/chat/completions", chat(stream=True))
        assert status == 200
        assert headers["Content-Type"].startswith("text/event-stream")
        payloads = sse_data(body)
        assert payloads[-1] == "[DONE]"
        chunks = [orjson.loads(p) for p in payloads[:-1]]
        assert all("usage" not in chunk for chunk in chunks)
        event = gateway.event(headers["x-aiofast-request-id"])
    assert event["usage_source"] == "provider"
    assert event["output_tokens"] > 0


async def test_stream_with_usage_carries_the_gateway_facts() -> None:
    async with running(simulated_policy()) as gateway:
        request = chat(stream=True, stream_options={"include_usage": True})
        _, headers, body = await gateway.post("/v1/chat/completions", request)
    usage_chunk = orjson.loads(sse_data(body)[-2])
    assert usage_chunk["choices"] == []
    facts = usage_chunk["aiofast"]
    assert facts["request_id"] == headers["x-aiofast-request-id"]
    assert facts["tier"] == "small"
    assert facts["output_tokens"] == usage_chunk["usage"]["completion_tokens"]
    assert facts["cost_usd"] == pytest.approx(
        cost("gpt-4o-mini", usage_chunk["usage"], table=PriceTable.default()).usd
    )


async def test_streamed_cost_equals_non_streamed_cost() -> None:
    async with running(simulated_policy()) as gateway:
        _, plain, _ = await gateway.post("/v1/chat/completions", chat("large", "Same question"))
        _, streamed, _ = await gateway.post(
            "/v1/chat/completions", chat("large", "Same question", stream=True)
        )
        whole = gateway.event(plain["x-aiofast-request-id"])
        stream = gateway.event(streamed["x-aiofast-request-id"])
    for field in ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens"):
        assert whole[field] == stream[field], field
    assert whole["cost_usd"] == stream["cost_usd"]
    assert stream["stream"] == 1
    assert whole["stream"] == 0


async def test_embeddings_and_models() -> None:
    async with running(simulated_policy()) as gateway:
        status, headers, body = await gateway.post(
            "/v1/embeddings", {"model": "small", "input": ["one", "two words"]}
        )
        assert status == 200
        assert len(orjson.loads(body)["data"]) == 2
        assert int(headers["x-aiofast-input-tokens"]) > 0
        status, _, body = await gateway.get("/v1/models")
    names = [model["id"] for model in orjson.loads(body)["data"]]
    assert names[:3] == ["small", "medium", "large"]
    assert {"gpt-4o-mini", "gpt-4o", "o3"} <= set(names)


async def test_rate_limited_upstream_passes_on_retry_after() -> None:
    policy = simulated_policy(faults={"error_rate": 1.0, "kinds": ["429"], "retry_after": 7})
    async with running(policy) as gateway:
        status, headers, body = await gateway.post("/v1/chat/completions", chat("faulty"))
        event = gateway.event(headers["x-aiofast-request-id"])
    assert status == 429
    assert headers["Retry-After"] == "7"
    assert orjson.loads(body)["error"]["code"] == "rate_limit_exceeded"
    assert event["error_type"] == "upstream_429"


@pytest.mark.parametrize("kind", ["500", "529"])
async def test_upstream_server_errors_become_502(kind: str) -> None:
    policy = simulated_policy(faults={"error_rate": 1.0, "kinds": [kind]})
    async with running(policy) as gateway:
        status, _, body = await gateway.post("/v1/chat/completions", chat("faulty"))
    error = orjson.loads(body)["error"]
    assert status == 502
    assert f"answered {kind}" in error["message"]
    assert error["type"] == "upstream_error"


async def test_hanging_upstream_times_out_with_504() -> None:
    policy = simulated_policy(
        faults={"error_rate": 1.0, "kinds": ["hang"], "hang_seconds": 30},
        timeouts={"first_byte": 0.3},
    )
    async with running(policy) as gateway:
        status, headers, body = await gateway.post("/v1/chat/completions", chat("faulty"))
        event = gateway.event(headers["x-aiofast-request-id"])
    assert status == 504
    assert orjson.loads(body)["error"]["code"] == "upstream_timeout"
    assert event["status"] == 504


async def test_cut_stream_ends_with_an_error_event_not_done() -> None:
    policy = simulated_policy(faults={"error_rate": 1.0, "kinds": ["cut"], "cut_after_chunks": 4})
    async with running(policy) as gateway:
        status, headers, body = await gateway.post(
            "/v1/chat/completions", chat("faulty", stream=True)
        )
        event = gateway.event(headers["x-aiofast-request-id"])
    assert status == 200
    payloads = sse_data(body)
    assert "[DONE]" not in payloads
    assert orjson.loads(payloads[-1])["error"]["type"] == "upstream_error"
    deltas = [orjson.loads(p)["choices"][0]["delta"].get("content") for p in payloads[:-1]]
    assert len([d for d in deltas if d]) == 4
    assert event["error_type"] == "stream_interrupted"
    assert event["usage_source"] == "counted"
    assert event["output_tokens"] >= 4
    assert event["cost_usd"] > 0


async def test_cut_whole_answer_is_a_502() -> None:
    policy = simulated_policy(faults={"error_rate": 1.0, "kinds": ["cut"]})
    async with running(policy) as gateway:
        status, _, body = await gateway.post("/v1/chat/completions", chat("faulty"))
    assert status == 502
    assert "broke the connection" in orjson.loads(body)["error"]["message"]


async def test_unreachable_upstream_is_a_502() -> None:
    extra = {
        "upstreams": [{"name": "down", "kind": "openai", "base_url": "http://127.0.0.1:9/v1"}],
        "deployments": [{"name": "d", "upstream": "down", "model": "gpt-4o-mini"}],
        "tiers": {"small": ["d"]},
    }
    async with running(simulated_policy(extra=extra)) as gateway:
        status, _, body = await gateway.post("/v1/chat/completions", chat())
    assert status == 502
    assert "cannot be reached" in orjson.loads(body)["error"]["message"]


async def test_client_disconnect_cancels_upstream_and_still_records_usage() -> None:
    slow = {"ttft_ms": 0, "inter_token_ms": 50, "min_output_tokens": 200, "max_output_tokens": 200}
    async with running(simulated_policy(simulation=slow)) as gateway:
        async with aiohttp.ClientSession() as session:
            response = await session.post(
                gateway.url + "/v1/chat/completions", json=chat(stream=True)
            )
            request_id = response.headers["x-aiofast-request-id"]
            await response.content.readline()
            response.close()
        for _ in range(100):
            events = [e for e in gateway.events() if e["request_id"] == request_id]
            if events:
                break
            await asyncio.sleep(0.05)
    assert events, "no usage event after the client left"
    assert events[0]["error_type"] == "client_disconnected"
    assert events[0]["status"] == 499
    assert events[0]["latency_ms"] < 5000


async def test_metrics_count_requests_and_overhead() -> None:
    async with running(simulated_policy()) as gateway:
        for _ in range(3):
            await gateway.post("/v1/chat/completions", chat())
        status, _headers, body = await gateway.get("/aiofast/metrics")
    text = body.decode()
    assert status == 200
    assert 'aiofast_gateway_overhead_seconds_count{api="chat"} 3.0' in text
    assert "aiofast_requests_total" in text
    assert 'aiofast_tokens_total{direction="output"' in text
    assert "aiofast_in_flight_requests" in text
