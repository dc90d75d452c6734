"""The executor against a real loopback upstream with scripted faults."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from aiofast import RouteExhaustedError, UpstreamError
from aiofast.routing import Executor, OutputCheck, Plan, RouteFacts, Router
from routing_upstream import FaultyUpstream, aiohttp_call, start

QUOTA = orjson.dumps({"error": {"message": "no money", "code": "insufficient_quota"}})
BAD_REQUEST = orjson.dumps({"error": {"message": "bad", "code": "invalid_request_error"}})


def spec(**overrides: Any) -> dict[str, Any]:
    fast = {"connect": 1, "first_token": 0.5, "total": 0.5}
    base: dict[str, Any] = {
        "deployments": [
            {"name": "a", "upstream": "sim", "model": "m", "weight": 1000, "timeouts": fast},
            {"name": "b", "upstream": "sim", "model": "m", "weight": 1, "timeouts": fast},
            {"name": "c", "upstream": "sim", "model": "m-large", "timeouts": fast},
        ],
        "tiers": [
            {"name": "small", "deployments": ["a", "b"]},
            {"name": "large", "deployments": ["c"]},
        ],
        "breaker": {"min_calls": 2, "cooldown_seconds": 0.3, "half_open_calls": 1},
        "retry": {"max_attempts": 4, "retries_per_deployment": 2, "base_delay": 0.01},
    }
    base.update(overrides)
    return base


@pytest.fixture
async def upstream() -> AsyncIterator[FaultyUpstream]:
    server = FaultyUpstream()
    runner = await start(server)
    yield server
    await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def small_only(router: Router) -> Any:
    """A decision for the small tier with `a` first (its weight dwarfs `b`'s)."""
    decision = router.decide(RouteFacts())
    assert decision.candidates == ["a", "b"]
    return decision


async def run(
    router: Router,
    upstream: FaultyUpstream,
    session: aiohttp.ClientSession,
    *,
    stream: bool = False,
    executor: Executor | None = None,
    check: OutputCheck | None = None,
) -> Any:
    body = {"model": "m", "messages": [], "stream": stream}
    executor = executor or Executor(router, rng=random.Random(0))
    call = aiohttp_call(session, upstream.url, body)
    decision = router.decide(RouteFacts())
    return await executor.run(decision, call, facts=RouteFacts(), stream=stream, check=check)


async def test_429_retry_after_is_waited_for(upstream: FaultyUpstream, session: Any) -> None:
    router = Router(spec(), seed=1)
    small_only(router)
    upstream.script("a", ("status", 429, {"retry-after": "1"}, b"{}"))
    routed = await run(router, upstream, session)
    first, second = upstream.arrivals["a"]
    assert second - first >= 1.0
    assert routed.deployment.name == "a"
    assert [a.next_step for a in routed.attempts] == ["retry", "done"]
    assert routed.attempts[1].waited == 1.0


async def test_retry_after_ms_takes_precedence(upstream: FaultyUpstream, session: Any) -> None:
    router = Router(spec(), seed=1)
    upstream.script("a", ("status", 503, {"retry-after-ms": "200", "retry-after": "30"}, b""))
    await run(router, upstream, session)
    first, second = upstream.arrivals["a"]
    assert 0.2 <= second - first < 5


async def test_retry_after_over_the_cap_falls_back(upstream: FaultyUpstream, session: Any) -> None:
    router = Router(spec(retry={"retry_after_cap": 2}), seed=1)
    upstream.script("a", ("status", 429, {"retry-after": "60"}, b"{}"))
    routed = await run(router, upstream, session)
    assert routed.deployment.name == "b"
    assert upstream.calls("a") == 1


async def test_500_retries_then_falls_back(upstream: FaultyUpstream, session: Any) -> None:
    router = Router(spec(breaker={"min_calls": 10}), seed=1)
    upstream.script("a", *[("status", 500, {}, b"")] * 3)
    routed = await run(router, upstream, session)
    assert (upstream.calls("a"), upstream.calls("b")) == (3, 1)
    assert [a.next_step for a in routed.attempts] == ["retry", "retry", "fallback", "done"]
    assert "served_by=b; attempts=4" in routed.route_header()


async def test_an_opening_breaker_cuts_retries_short(
    upstream: FaultyUpstream, session: Any
) -> None:
    router = Router(spec(), seed=1)
    upstream.script("a", *[("status", 500, {}, b"")] * 3)
    routed = await run(router, upstream, session)
    assert (upstream.calls("a"), routed.deployment.name) == (2, "b")
    assert [a.next_step for a in routed.attempts] == ["retry", "retry", "skipped", "done"]


async def test_hang_times_out_and_falls_back(upstream: FaultyUpstream, session: Any) -> None:
    router = Router(spec(retry={"retries_per_deployment": 0}), seed=1)
    upstream.script("a", ("hang",))
    routed = await run(router, upstream, session)
    assert routed.deployment.name == "b"
    assert routed.attempts[0].error == "timeout"
    assert 0.5 <= routed.attempts[0].elapsed < 2


async def test_insufficient_quota_is_not_retried(upstream: FaultyUpstream, session: Any) -> None:
    router = Router(spec(), seed=1)
    upstream.script("a", ("status", 429, {}, QUOTA))
    routed = await run(router, upstream, session)
    assert (upstream.calls("a"), routed.deployment.name) == (1, "b")


async def test_bad_request_stops_with_the_upstream_reply(
    upstream: FaultyUpstream, session: Any
) -> None:
    router = Router(spec(), seed=1)
    upstream.script("a", ("status", 400, {}, BAD_REQUEST))
    with pytest.raises(RouteExhaustedError) as caught:
        await run(router, upstream, session)
    assert caught.value.reply.status == 400
    assert upstream.calls() == 1
    # The request was at fault, not the deployment: the breaker counts a success.
    assert router.snapshot()["deployments"]["a"]["failures"] == 0


async def test_stream_cut_before_first_chunk_falls_back(
    upstream: FaultyUpstream, session: Any
) -> None:
    router = Router(spec(retry={"retries_per_deployment": 0}), seed=1)
    upstream.script("a", ("cut", 0))
    routed = await run(router, upstream, session, stream=True)
    assert routed.deployment.name == "b"
    body = b"".join([piece async for piece in routed.stream])
    assert body.endswith(b"data: [DONE]\n\n")
    assert b"b-0" in body
    assert b"a-0" not in body
    assert routed.stream_error is None


async def test_stream_error_event_before_commitment_falls_back(
    upstream: FaultyUpstream, session: Any
) -> None:
    router = Router(spec(retry={"retries_per_deployment": 0}), seed=1)
    upstream.script("a", ("error_event",))
    routed = await run(router, upstream, session, stream=True)
    assert routed.deployment.name == "b"
    assert routed.attempts[0].error == "stream_error_event"
    assert [piece async for piece in routed.stream]


async def test_stream_cut_after_first_chunk_ends_with_an_error_event(
    upstream: FaultyUpstream, session: Any
) -> None:
    router = Router(spec(), seed=1)
    upstream.script("a", ("cut", 2))
    routed = await run(router, upstream, session, stream=True)
    pieces = [piece async for piece in routed.stream]
    body = b"".join(pieces)
    assert b"a-0" in body
    assert b"[DONE]" not in body
    last = orjson.loads(pieces[-1].removeprefix(b"data: "))
    assert last["error"]["code"] == "stream_cut"
    assert routed.stream_error == "stream_cut"
    assert upstream.calls() == 1
    state = router.snapshot()["deployments"]["a"]
    assert (state["failures"], state["in_flight"]) == (1, 0)


async def test_stream_that_stalls_after_commitment_ends_at_its_total_timeout(
    upstream: FaultyUpstream, session: Any
) -> None:
    router = Router(spec(), seed=1)
    upstream.script("a", ("stall", 2))
    routed = await run(router, upstream, session, stream=True)
    started = asyncio.get_running_loop().time()
    pieces = [piece async for piece in routed.stream]
    waited = asyncio.get_running_loop().time() - started
    assert b"a-1" in b"".join(pieces)
    last = orjson.loads(pieces[-1].removeprefix(b"data: "))
    assert last["error"]["code"] == "timeout"
    assert routed.stream_error == "timeout"
    # timeouts.total (0.5 s) ends the stuck stream; slack for a loaded machine.
    assert waited < 1.5
    state = router.snapshot()["deployments"]["a"]
    assert (state["failures"], state["in_flight"]) == (1, 0)


async def test_a_cancelled_reader_is_cancelled_not_timed_out(
    upstream: FaultyUpstream, session: Any
) -> None:
    router = Router(spec(), seed=1)
    upstream.script("a", ("stall", 1))
    routed = await run(router, upstream, session, stream=True)
    assert routed.stream is not None

    async def read_all() -> list[bytes]:
        return [piece async for piece in routed.stream]

    reader = asyncio.ensure_future(read_all())
    await asyncio.sleep(0.05)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert routed.stream_error is None
    state = router.snapshot()["deployments"]["a"]
    assert (state["failures"], state["in_flight"]) == (0, 0)


async def test_abandoned_stream_leaves_no_call_in_flight(
    upstream: FaultyUpstream, session: Any
) -> None:
    router = Router(spec(), seed=1)
    routed = await run(router, upstream, session, stream=True)
    assert routed.stream is not None
    await routed.stream.__anext__()
    await routed.stream.aclose()  # type: ignore[attr-defined]
    state = router.snapshot()["deployments"]["a"]
    assert (state["in_flight"], state["calls"]) == (0, 0)


async def test_breaker_opens_skips_and_recovers(upstream: FaultyUpstream, session: Any) -> None:
    router = Router(spec(retry={"retries_per_deployment": 0}), seed=1)
    upstream.script("a", ("status", 500, {}, b""), ("status", 500, {}, b""))
    for _ in range(2):
        assert (await run(router, upstream, session)).deployment.name == "b"
    decision = router.decide(RouteFacts())
    assert decision.dropped == [("a", "breaker_open", False)]
    routed = await run(router, upstream, session)
    assert routed.deployment.name == "b"
    assert upstream.calls("a") == 2

    await asyncio.sleep(0.35)
    routed = await run(router, upstream, session)
    assert routed.deployment.name == "a"
    assert router.snapshot()["deployments"]["a"]["breaker"]["phase"] == {"state": "closed"}


async def test_cascade_escalates_on_invalid_json(upstream: FaultyUpstream, session: Any) -> None:
    router = Router(spec(), seed=1)
    upstream.script("a", ("text", "not json at all"))
    upstream.script("c", ("text", '{"answer": 42}'))
    body = {"response_format": {"type": "json_object"}}
    check = OutputCheck.for_request(router.spec.cascade, body)
    routed = await run(router, upstream, session, check=check)
    assert (routed.deployment.name, routed.tier, routed.cascade) == ("c", "large", "invalid_json")
    assert routed.constraint_failure is None
    assert [d.name for d, _ in routed.superseded] == ["a"]
    assert [a.next_step for a in routed.attempts] == ["cascade", "done"]
    assert "cascade=invalid_json:large" in routed.route_header()
    assert routed.usage_fields()["attempts"] == 2


async def test_cascade_shadow_only_reports(upstream: FaultyUpstream, session: Any) -> None:
    router = Router(spec(cascade={"shadow": True}), seed=1)
    upstream.script("a", ("text", "I'm sorry, but I cannot help with that."))
    check = OutputCheck.for_request(router.spec.cascade, {})
    routed = await run(router, upstream, session, check=check)
    assert (routed.deployment.name, routed.constraint_failure) == ("a", "refusal")
    assert upstream.calls("c") == 0


async def test_no_request_exceeds_the_attempt_cap(upstream: FaultyUpstream, session: Any) -> None:
    rng = random.Random(42)
    faults = [
        ("status", 500, {}, b""),
        ("status", 429, {"retry-after-ms": "1"}, b"{}"),
        ("status", 529, {}, b""),
        ("status", 429, {}, QUOTA),
        ("ok",),
    ]
    for cap in (1, 2, 3, 5):
        router = Router(
            spec(
                tiers=[{"name": "all", "deployments": ["a", "b", "c"], "fallbacks": []}],
                retry={"max_attempts": cap, "retries_per_deployment": 3, "base_delay": 0.001},
                breaker={"min_calls": 1000},
            ),
            seed=cap,
        )
        executor = Executor(router, rng=rng)
        for _ in range(15):
            before = upstream.calls()
            for name in "abc":
                upstream.scripts[name].clear()
                upstream.script(name, *rng.choices(faults, k=4))
            try:
                routed = await run(router, upstream, session, executor=executor)
                made = len(routed.calls())
            except RouteExhaustedError as exc:
                made = sum(1 for a in exc.attempts if a.next_step != "skipped")
            assert upstream.calls() - before == made <= cap


async def test_retry_budget_limits_retries_in_an_outage(
    upstream: FaultyUpstream, session: Any
) -> None:
    router = Router(
        spec(
            tiers=[{"name": "one", "deployments": ["a"]}],
            retry={"budget_ratio": 0.1, "budget_burst": 2, "base_delay": 0.001},
            breaker={"min_calls": 1000},
        ),
        seed=1,
    )
    executor = Executor(router, rng=random.Random(0))
    upstream.script("a", *[("status", 503, {}, b"")] * 200)
    for _ in range(20):
        with pytest.raises(RouteExhaustedError):
            await run(router, upstream, session, executor=executor)
    # 20 requests, burst 2 plus 10 % of requests: at most 4 retries on top of 20 calls.
    assert 20 < upstream.calls("a") <= 24


async def test_stream_failure_can_raise_for_callers_with_their_own_error_events(
    upstream: FaultyUpstream, session: Any
) -> None:
    router = Router(spec(), seed=1)
    upstream.script("a", ("cut", 1))
    executor = Executor(router, stream_failures="raise")
    routed = await run(router, upstream, session, stream=True, executor=executor)
    received: list[bytes] = []

    async def drain() -> None:
        async for piece in routed.stream:
            received.append(piece)

    with pytest.raises(UpstreamError, match="stream_cut"):
        await drain()
    assert b"a-0" in b"".join(received)


async def test_a_plan_pins_candidates_chosen_outside_the_router(
    upstream: FaultyUpstream, session: Any
) -> None:
    router = Router(spec(), seed=1)
    plan = Plan(candidates=["c", "b"], tier="large", explanation="tier=large; by=model")
    call = aiohttp_call(session, upstream.url, {"model": "m", "messages": []})
    routed = await Executor(router).run(plan, call, facts=RouteFacts())
    assert routed.deployment.name == "c"
    assert routed.route_header() == "tier=large; by=model; served_by=c; attempts=1"


async def test_no_call_starts_after_the_deadline(upstream: FaultyUpstream, session: Any) -> None:
    order = spec(retry={"deadline": 0.3}, breaker={"min_calls": 100})
    order["deployments"][2]["weight"] = 0  # `c` last
    order["tiers"] = [{"name": "all", "deployments": ["a", "b", "c"]}]
    router = Router(order, seed=1)
    upstream.script("a", ("status", 503, {"retry-after": "0.5"}, b""))
    upstream.script("b", ("status", 503, {"retry-after": "0.1"}, b""), ("hang",))
    with pytest.raises(RouteExhaustedError) as caught:
        await run(router, upstream, session)
    # `a` asks for more than the deadline leaves: fall back at once; `b` is retried once,
    # its hang times out at 0.5 s, and `c` would start after the deadline.
    assert (upstream.calls("a"), upstream.calls("b"), upstream.calls("c")) == (1, 2, 0)
    assert caught.value.reason == "deadline"
