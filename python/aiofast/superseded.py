"""Billing answers that were paid for but not served: a cascade's superseded answers.

When a tier's answer fails an output constraint, the request is asked once more of the
next tier up; the provider billed the first answer all the same. The caller stage leaves
it in ``ctx.state[aiofast.stages.SUPERSEDED]``; the pipeline prices it here
(:func:`price_superseded`, onto ``ctx.superseded``, summed by ``ctx.total_cost``) and
records it as a ledger row of its own (:func:`superseded_row`), so cost by model stays
exact.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import orjson

from aiofast.context import RequestContext, Superseded
from aiofast.ledger import SUPERSEDED_ERROR, UsageEvent
from aiofast.parsing import API_MESSAGES
from aiofast.policy import DeploymentPolicy
from aiofast.prices import Cost, PriceTable, cost
from aiofast.stages import SupersededAnswer
from aiofast.tokens import count_tokens
from aiofast.usage import read_anthropic_body, read_openai_body

__all__ = ["price_superseded", "superseded_row"]


def price_superseded(
    ctx: RequestContext,
    answer: SupersededAnswer,
    deployment: DeploymentPolicy,
    price_model: Callable[[str], str],
    prices: PriceTable,
) -> Superseded:
    """The cost of one superseded answer: the provider's usage in its body, else the
    gateway's count (the request's input tokens, the answer's text)."""
    try:
        body = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        body = None
    read = read_anthropic_body if ctx.api == API_MESSAGES else read_openai_body
    reading = read(body if isinstance(body, dict) else {})
    model = reading.model or deployment.model
    priced_as = price_model(model)
    billed: Cost | None = None
    source = "provider"
    if reading.usage is not None:
        try:
            billed = cost(priced_as, reading.usage, table=prices)
        except ValueError:
            billed = None
    if billed is None:
        source = "counted"
        text = reading.text or answer.body.decode(errors="replace")
        output = count_tokens(text, model=deployment.model)
        counted = {"prompt_tokens": ctx.input_tokens, "completion_tokens": output}
        billed = cost(priced_as, counted, table=prices)
    return Superseded(deployment, answer.tier, model, source, billed, answer.elapsed, answer.reason)


def superseded_row(
    served: UsageEvent, ctx: RequestContext, answer: Superseded, index: int
) -> UsageEvent:
    """The ledger row of a superseded answer: ``REQUEST_ID.superseded-N``, linked to its
    request through ``parent_id`` (outcomes reported for the request cover it too)."""
    billed, deployment = answer.cost, answer.deployment
    return dataclasses.replace(
        served,
        request_id=f"{ctx.request_id}.superseded-{index}",
        parent_id=ctx.parent_id or ctx.request_id,
        finished_at=served.started_at + answer.elapsed,
        model=answer.model,
        tier=answer.tier,
        route=f"superseded: {answer.reason}",
        upstream=deployment.upstream,
        deployment=deployment.name,
        status=200,
        error_type=SUPERSEDED_ERROR,
        usage_source=answer.usage_source,
        input_tokens=billed.prompt_tokens,
        cached_tokens=billed.cached_tokens,
        cache_write_tokens=billed.cache_write_tokens,
        output_tokens=billed.output_tokens,
        reasoning_tokens=billed.reasoning_tokens,
        cost_usd=billed.usd,
        latency_ms=answer.elapsed * 1000,
        ttft_ms=None,
        upstream_ms=answer.elapsed * 1000,
        attempts=1,
        tool_calls="",
        tool_call_count=0,
    )
