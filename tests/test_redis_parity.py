"""The Redis backend decides as the in-process limiter does, request for request."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiofast.limits import Limiter, RequestContext
from aiofast.stores.redis import RedisStore
from aiofast.stores.settings import RedisSettings
from aiofast.stores.shared_limits import SharedLimiter

LIMITS: list[dict[str, Any]] = [
    # Slow refills (a token every 86 s), so that the moments the two limiters read their
    # clocks, a few milliseconds apart on a busy machine, never change a decision.
    {"scope": "team", "requests_per_minute": 5, "burst": 3, "tokens_per_day": 1000},
    {"scope": "user", "concurrency": 2, "mode": "shadow"},
    {
        "name": "user-spend",
        "scope": "user",
        "budget": {"usd": 0.05, "per": "month"},
        "downgrade_to": "small",
        "downgrade_at": 0.5,
    },
    {"scope": "global", "requests_per_minute": 12, "burst": 6},
    {"name": "daily", "scope": "team", "value": "b", "budget": {"usd": 0.02, "per": "day"}},
]

request = st.builds(
    lambda team, user, tokens, cost: RequestContext(
        team=team, user=user, input_tokens=tokens, reserved_output_tokens=50, cost_usd=cost
    ),
    st.sampled_from(["a", "b"]),
    st.sampled_from(["u1", "u2", "u3"]),
    st.integers(0, 600),
    st.sampled_from([0.0, 0.004, 0.011, 0.03]),
)


def view(admission: Any) -> tuple[Any, ...]:
    refusal = admission.refusal
    return (
        admission.admitted,
        None if refusal is None else (refusal.code, refusal.kind, refusal.limit, refusal.scope),
        None if refusal is None else refusal.scope_value,
        sorted((r.limit, r.code) for r in admission.shadow_refusals),
        admission.downgrade_to,
        admission.limit_requests,
        admission.remaining_requests,
        admission.limit_tokens,
        admission.remaining_tokens,
    )


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(request, st.sampled_from(["hold", "settle", "oldest"])), max_size=25))
def test_same_decisions_as_the_in_process_limiter(
    redis_url: str, steps: list[tuple[RequestContext, str]]
) -> None:
    """Admissions interleaved with settles, in order and out of order (``oldest``
    settles the longest-held request instead of this one)."""
    asyncio.run(_compare(redis_url, steps))


async def _compare(url: str, steps: list[tuple[RequestContext, str]]) -> None:
    store = RedisStore.from_settings(RedisSettings(timeout_ms=2000, connect_timeout_ms=2000), url)
    await store.start()
    await store.client.flushall()
    shared = SharedLimiter(LIMITS, store)
    local = Limiter(LIMITS)
    held: list[tuple[Any, Any, RequestContext]] = []
    try:
        for ctx, action in steps:
            ours, theirs = await shared.admit(ctx), local.admit(ctx)
            assert view(ours) == view(theirs), ctx
            if ours.admitted:
                held.append((ours.handle, theirs.handle, ctx))
            if held and action != "hold":
                mine, native, asked = held.pop(0 if action == "oldest" else -1)
                used = (asked.input_tokens // 2, 10, asked.cost_usd / 2)
                assert await shared.settle(mine, *used)
                assert local.settle(native, *used)
    finally:
        await store.close()
