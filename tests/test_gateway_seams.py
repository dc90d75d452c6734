"""The pipeline's seams, each filled by a small real stage: what later stages rely on."""

from __future__ import annotations

import orjson

from aiofast.context import Candidate, RequestContext
from aiofast.gateway import create_app
from aiofast.refusals import bad_request, rate_limited
from aiofast.stages import Attempt, Stages, StreamChecker, TierRouter
from aiofast.upstream import UpstreamCall
from gateway_support import chat, running, simulated_policy, sse_data


class BlockWord:
    async def check_input(self, ctx: RequestContext) -> None:
        if "forbidden" in str(ctx.body["messages"][-1].get("content")):
            raise bad_request("blocked by rule no-forbidden", param="messages", code="blocked")


class EverySecondRefused:
    def __init__(self) -> None:
        self.admitted = 0
        self.settled: list[tuple[str, float | None]] = []

    async def admit(self, ctx: RequestContext) -> None:
        self.admitted += 1
        if self.admitted % 2 == 0:
            raise rate_limited(
                "requests per minute exceeded for key",
                retry_after=2.5,
                headers={"x-ratelimit-remaining-requests": "0"},
            )
        ctx.response_headers["x-ratelimit-remaining-requests"] = "9"

    def settle(self, ctx: RequestContext) -> None:
        self.settled.append((ctx.request_id, ctx.cost.usd if ctx.cost else None))


class Shout:
    """Upper-cases one word, on whole answers and across stream deltas."""

    def check_output(self, ctx: RequestContext, text: str) -> str | None:
        return text.replace("the", "THE") if "the" in text else None

    def stream_checker(self, ctx: RequestContext) -> StreamChecker | None:
        return _ShoutStream()


class _ShoutStream:
    def feed(self, delta: str) -> str:
        return delta.replace("the", "THE")

    def finish(self) -> str:
        return ""


class FallBackOnError:
    """Tries the candidates in order while they answer with an error status."""

    async def call(self, ctx: RequestContext, attempt: Attempt) -> UpstreamCall:
        for candidate in ctx.candidates:
            ctx.served = candidate
            ctx.attempts += 1
            call = await attempt(candidate)
            if call.status < 400 or candidate is ctx.candidates[-1]:
                return call
            call.close()
        raise AssertionError("no candidates")


async def test_input_guard_blocks_before_the_upstream() -> None:
    policy = simulated_policy()
    stages = Stages(router=TierRouter(policy), input_guard=BlockWord())
    async with running(create_app(policy, stages=stages)) as gateway:
        status, headers, body = await gateway.post(
            "/v1/chat/completions", chat(text="a forbidden thing")
        )
        event = gateway.event(headers["x-aiofast-request-id"])
    assert status == 400
    assert orjson.loads(body)["error"]["code"] == "blocked"
    assert (event["status"], event["error_type"], event["attempts"]) == (400, "blocked", 0)


async def test_limiter_refuses_with_retry_after_and_settles_every_admitted_request() -> None:
    policy = simulated_policy()
    limiter = EverySecondRefused()
    stages = Stages(router=TierRouter(policy), limiter=limiter)
    async with running(create_app(policy, stages=stages)) as gateway:
        ok, ok_headers, _ = await gateway.post("/v1/chat/completions", chat())
        refused, headers, body = await gateway.post("/v1/chat/completions", chat())
        await gateway.post("/v1/chat/completions", chat(stream=True))
    assert ok == 200
    assert ok_headers["x-ratelimit-remaining-requests"] == "9"
    assert refused == 429
    assert (headers["Retry-After"], headers["retry-after-ms"]) == ("3", "2500")
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert orjson.loads(body)["error"]["type"] == "rate_limit_error"
    assert len(limiter.settled) == 2
    assert all(usd is not None and usd > 0 for _, usd in limiter.settled)


async def test_output_guard_rewrites_whole_and_streamed_answers() -> None:
    policy = simulated_policy()
    stages = Stages(router=TierRouter(policy), output_guard=Shout())
    async with running(create_app(policy, stages=stages)) as gateway:
        _, _, whole = await gateway.post("/v1/chat/completions", chat(text="same"))
        _, _, streamed = await gateway.post("/v1/chat/completions", chat(text="same", stream=True))
    text = orjson.loads(whole)["choices"][0]["message"]["content"]
    pieces = [
        orjson.loads(p)["choices"][0]["delta"].get("content") or "" for p in sse_data(streamed)[:-1]
    ]
    assert "".join(pieces) == text
    assert " the " not in f" {text} "


async def test_caller_falls_back_to_the_next_candidate() -> None:
    policy = simulated_policy(faults={"error_rate": 1.0, "kinds": ["500"]})

    class TwoDeployments(TierRouter):
        def route(self, ctx: RequestContext) -> list[Candidate]:
            return super().route(ctx) + TierRouter.route(self, _as(ctx, "small"))

    stages = Stages(router=TwoDeployments(policy), caller=FallBackOnError())
    async with running(create_app(policy, stages=stages)) as gateway:
        status, headers, _ = await gateway.post("/v1/chat/completions", chat("faulty"))
        event = gateway.event(headers["x-aiofast-request-id"])
    assert status == 200
    assert headers["x-aiofast-tier"] == "small"
    assert event["attempts"] == 2


def _as(ctx: RequestContext, model: str) -> RequestContext:
    copy = RequestContext(request_id=ctx.request_id, api=ctx.api, body=ctx.body)
    copy.requested_model = model
    return copy
