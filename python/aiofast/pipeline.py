"""The request pipeline: every LLM request goes through these steps, in this order.

=====================  =============================================================
step                   seam (protocol in :mod:`aiofast.stages`, state on the context)
=====================  =============================================================
1. parse               :func:`aiofast.parsing.parse_body` - one orjson pass, 400s
2. count               built in: ``ctx.input_tokens`` / ``ctx.input_estimated``
3. guard input         ``Stages.input_guard``: ``InputGuard.check_input(ctx)``
4. limit (admit)       ``Stages.limiter``: ``Limiter.admit(ctx)``
5. route               ``Stages.router``: ``Router.route(ctx) -> list[Candidate]``
6. call upstream       ``Stages.caller``: ``Caller.call(ctx, attempt) -> UpstreamCall``
7. guard output        ``Stages.output_guard``: ``check_output(ctx, text)`` for whole
                       answers, ``stream_checker(ctx).feed(delta)`` for every streamed
                       text delta
8. settle              built in: usage and cost (with answers a cascade superseded,
                       ``ctx.state[SUPERSEDED]``); then ``Limiter.settle(ctx)`` and
                       every ``Observer.observe(ctx)``; then ledger, metrics, log line
=====================  =============================================================

Every stage receives the same :class:`~aiofast.context.RequestContext`; a stage refuses
by raising a :class:`~aiofast.refusals.RequestRefused` (``rate_limited(...)`` for 429 with
``Retry-After`` and ``x-ratelimit-*`` headers), which the front end (gateway, middleware,
Client) turns into an error in the client's wire format. Stage-private state goes in
``ctx.state[NAME]``. ``Limiter.settle`` runs exactly once for every request that passed
``admit``, whatever happened after (error, timeout, client gone), with the final
``ctx.cost``. Retries, fallbacks, circuit breakers and cascades are a ``Caller``.

Defaults: no guard, no limits; with tiers, the policy's routing
(:mod:`aiofast.routing.stages`: rules, experiments, strategies, breakers, retries,
fallbacks, cascades); without tiers, the requested deployment or model
(:class:`~aiofast.stages.TierRouter`) and one attempt. Stages are given as
``Pipeline(policy, stages=Stages(...))`` or ``create_app(policy, stages=...)``;
:meth:`aiofast.stages.Stages.default` is where a policy's own sections become stages.
The middleware of an existing app runs only ``input_guard`` and ``limiter``
(:meth:`Pipeline.admit_caller`) for the app's own requests; the LLM calls its handlers
make through the Client run every step.

The front ends drive a request as ``admit`` -> ``call`` -> ``complete`` (whole body) or
``relay`` (stream) -> ``settle``; ``settle`` is always reached, from a ``finally``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson

from aiofast.auth import ANONYMOUS, Identity, KeyRing
from aiofast.cache import CACHE_HEADER, CachedResponse, ResponseCache
from aiofast.context import Candidate, RequestContext
from aiofast.guard_stage import FINDINGS, PolicyGuard
from aiofast.ledger import Ledger, UsageEvent
from aiofast.limits.stage import LimitsStage, limits_stage
from aiofast.parsing import API_CHAT, API_EMBEDDINGS, API_MESSAGES
from aiofast.policy import DeploymentPolicy, Policy
from aiofast.prices import Cost, PriceTable, cost
from aiofast.refusals import RequestRefused, bad_request, rate_limited, upstream_failed
from aiofast.relay import Sink, StreamRelay
from aiofast.routing.retry import retry_after
from aiofast.sse import format_event
from aiofast.stages import SUPERSEDED, Stages
from aiofast.stores import metrics as store_metrics
from aiofast.superseded import price_superseded, superseded_row
from aiofast.telemetry import Metrics, log_request
from aiofast.tokens import TokenCounter, count_chat, count_tokens
from aiofast.upstream import UpstreamCall, UpstreamPool
from aiofast.usage import (
    AnthropicStreamReader,
    OpenAIStreamReader,
    Reading,
    StreamReader,
    read_anthropic_body,
    read_openai_body,
)

if TYPE_CHECKING:
    from aiofast.stores.shared import SharedState

__all__ = ["Pipeline", "Sink"]

_PATHS = {API_CHAT: "/chat/completions", API_EMBEDDINGS: "/embeddings", API_MESSAGES: "/messages"}
logger = logging.getLogger("aiofast.pipeline")

_ADMITTED = "pipeline.admitted"
_CACHE_KEY = "pipeline.cache_key"
_FREE = Cost(0.0, True, 0, 0, 0, 0, 0)
CLIENT_CLOSED = 499


class Pipeline:
    """One policy's stages, upstreams, ledger and metrics; shared by all requests."""

    def __init__(
        self,
        policy: Policy,
        *,
        stages: Stages | None = None,
        prices: PriceTable | None = None,
    ) -> None:
        self.policy = policy
        self.stages = stages or Stages.default(policy)
        self.prices = prices or PriceTable.default()
        self.upstreams = UpstreamPool(policy)
        self.ledger = Ledger(policy.ledger)
        self.metrics = Metrics(policy.version)
        self.keys = KeyRing(policy.keys)
        self.admin_keys = KeyRing(policy.admin_keys)
        self._count_models = _counting_models(policy)
        self._price_models: dict[tuple[str, str], str] = {}
        # Shared with the other gateway processes through Redis ([redis]); None keeps
        # everything in this process.
        self.shared: SharedState | None = None
        if policy.redis is not None:
            # Imported here: only a policy with [redis] loads redis-py (several MiB).
            from aiofast.stores.shared import SharedState

            self.shared = SharedState(policy.redis)
        self.cache = (
            ResponseCache.from_settings(policy.cache, self.shared.store if self.shared else None)
            if policy.cache.routes
            else None
        )
        store_metrics.register(self.metrics.registry)
        if isinstance(self.stages.input_guard, PolicyGuard):
            self.metrics.registry.register(self.stages.input_guard.findings)
        if stages is None:
            self.stages = self._shared_stages(self.stages)
        self._started = False

    def _shared_stages(self, stages: Stages) -> Stages:
        """The default stages with the policy's limits, and with the limits' and the
        breakers' state in Redis when the policy shares it."""
        policy, shared = self.policy, self.shared
        limits = limits_stage(policy, self.prices, shared)
        if limits is not None:
            stages = dataclasses.replace(stages, limiter=limits)
            collector = limits.collector()
            if collector is not None:
                self.metrics.registry.register(collector)
        if shared is not None and policy.tiers:
            from aiofast.routing.stages import PolicyRouter, ResilientCaller, engine_for

            engine = shared.router(engine_for(policy, self.prices).spec)
            stages = dataclasses.replace(
                stages, router=PolicyRouter(policy, engine), caller=ResilientCaller(policy, engine)
            )
        return stages

    async def start(self) -> None:
        if self._started:
            return
        self.ledger.start()
        if isinstance(self.stages.limiter, LimitsStage):
            self.stages.limiter.start()
        await self.upstreams.start()
        if self.shared is not None:
            await self.shared.start()
        # Load the tokenizers now rather than on the first request.
        models = {d.model for d in self.policy.deployments}
        await asyncio.to_thread(lambda: [count_tokens("warm up", model=m) for m in models])
        self._started = True

    async def close(self) -> None:
        if not self._started:
            return
        self._started = False
        if isinstance(self.stages.limiter, LimitsStage):
            await self.stages.limiter.close()
        await self.upstreams.close()
        if self.shared is not None:
            await self.shared.close()
        await asyncio.to_thread(self.ledger.close)

    def context(
        self,
        api: str,
        body: dict[str, Any],
        *,
        raw: bytes = b"",
        identity: Identity = ANONYMOUS,
        started: float | None = None,
    ) -> RequestContext:
        """A context for a parsed body; ``raw`` lets an unchanged body go out as is."""
        ctx = RequestContext(request_id="req_" + os.urandom(12).hex(), api=api, body=body, raw=raw)
        if started is not None:
            ctx.started = started
        ctx.identity = identity
        self.load(ctx, body, raw)
        self.metrics.in_flight.inc()
        return ctx

    @staticmethod
    def load(ctx: RequestContext, body: dict[str, Any], raw: bytes = b"") -> None:
        """Put a parsed body on a context made before the body was read."""
        ctx.body, ctx.raw = body, raw
        ctx.requested_model = str(body.get("model", ""))
        ctx.stream = body.get("stream") is True and ctx.api != API_EMBEDDINGS
        ctx.wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    async def admit(self, ctx: RequestContext) -> None:
        """Count, guard input, limit, route; raises a RequestRefused to say no."""
        self._count(ctx)
        stages = self.stages
        await stages.input_guard.check_input(ctx)
        await stages.limiter.admit(ctx)
        ctx.state[_ADMITTED] = True
        ctx.candidates = stages.router.route(ctx)

    async def admit_caller(self, ctx: RequestContext) -> None:
        """Guard input and limits only: admission of an app request that is not itself
        an LLM call (the middleware), before its handler makes calls of its own."""
        await self.stages.input_guard.check_input(ctx)
        await self.stages.limiter.admit(ctx)
        ctx.state[_ADMITTED] = True

    async def call(self, ctx: RequestContext) -> UpstreamCall:
        started = time.perf_counter()
        try:
            return await self.stages.caller.call(ctx, partial(self._attempt, ctx))
        finally:
            ctx.upstream_wait += time.perf_counter() - started

    async def complete(self, ctx: RequestContext, call: UpstreamCall) -> bytes:
        """Read a whole answer, account for it, and return the body for the client."""
        started = time.perf_counter()
        try:
            raw = await call.read()
        finally:
            ctx.upstream_wait += time.perf_counter() - started
        if call.status >= 400:
            raise self._upstream_error(ctx, call, raw)
        body = call.parsed()
        if body is None:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = None
        if not isinstance(body, dict):
            ctx.error_type = "upstream_invalid_body"
            raise upstream_failed(
                f"Upstream {call.upstream.name!r} returned a body that is not JSON"
            )
        reading = read_anthropic_body(body) if ctx.api == API_MESSAGES else read_openai_body(body)
        self._take_reading(ctx, reading)
        if ctx.api != API_EMBEDDINGS:
            replacement = self.stages.output_guard.check_output(ctx, reading.text)
            if replacement is not None:
                raw = orjson.dumps(_replace_text(ctx.api, body, replacement))
        ctx.status = 200
        self._price(ctx)
        self._bill_superseded(ctx)
        return raw

    async def relay(self, ctx: RequestContext, call: UpstreamCall, write: Sink) -> None:
        """Relay a stream event by event; a broken upstream ends with an error event."""
        checker = self.stages.output_guard.stream_checker(ctx)
        reader = self._stream_reader(ctx, need_text=checker is not None)
        relay = StreamRelay(ctx, reader, checker, self._price)
        ctx.status = 200
        try:
            failure = await relay.run(call, write)
        except (ConnectionError, asyncio.CancelledError) as exc:
            call.close()
            ctx.status, ctx.error_type = CLIENT_CLOSED, "client_disconnected"
            self._take_stream(ctx, reader, complete=False)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        complete = failure is None and reader.done
        self._take_stream(ctx, reader, complete=complete)
        if complete:
            return
        call.close()
        if failure is None:
            failure = upstream_failed(
                f"Upstream {call.upstream.name!r} ended the stream before it was complete"
            )
        ctx.status = failure.status if failure.status >= 400 else 502
        ctx.error_type = ctx.error_type or "stream_interrupted"
        if not relay.upstream_error_sent:
            event = failure.body("anthropic" if ctx.api == API_MESSAGES else "openai")
            name = "error" if ctx.api == API_MESSAGES else None
            try:
                await write(format_event(event, name))
            except ConnectionError:
                ctx.error_type = "client_disconnected"

    def settle(self, ctx: RequestContext) -> UsageEvent | None:
        """Account for a finished request: cost, limits, ledger, metrics, log. Idempotent."""
        if ctx.settled:
            return None
        ctx.settled = True
        self.metrics.in_flight.dec()
        if ctx.usage is None and ctx.served is not None:
            ctx.usage = self._counted_usage(ctx)
            ctx.usage_source = "counted"
        if ctx.cost is None and ctx.usage is not None:
            self._price(ctx)
        self._bill_superseded(ctx)
        stages = self.stages
        if ctx.state.get(_ADMITTED):
            stages.limiter.settle(ctx)
        for observer in stages.observers:
            observer.observe(ctx)
        event = self._event(ctx)
        self.ledger.record(event)
        for index, answer in enumerate(ctx.superseded, 1):
            billed = superseded_row(event, ctx, answer, index)
            self.ledger.record(billed)
            self.metrics.bill(billed)
        overhead = max(
            0.0, (time.perf_counter() - ctx.started) - ctx.upstream_wait - ctx.client_wait
        )
        self.metrics.observe(event, overhead)
        log_request(
            event,
            self.policy.logging.bodies,
            ctx.body,
            ctx.response_text,
            guard=ctx.state.get(FINDINGS, ()),
        )
        return event

    async def cached(self, ctx: RequestContext) -> CachedResponse | None:
        """The stored answer to this exact request, when its route is cached: the
        request then costs nothing and is answered without calling upstream."""
        if self.cache is None or ctx.stream:
            return None
        key = self.cache.key_for(ctx.api, ctx.body, ctx.identity.key, ctx.identity.team)
        if key is None:
            return None
        ctx.state[_CACHE_KEY] = key
        hit = await self.cache.lookup(key)
        if hit is None:
            ctx.response_headers[CACHE_HEADER] = "miss"
            return None
        ctx.status, ctx.cost, ctx.usage_source = 200, _FREE, "cache"
        ctx.served_model = hit.headers.get("x-aiofast-model", "")
        ctx.response_headers.update(hit.headers)
        ctx.response_headers[CACHE_HEADER] = "hit"
        return hit

    async def remember(self, ctx: RequestContext, body: bytes) -> None:
        """Keep a whole answer for the next identical request (errors never)."""
        key = ctx.state.get(_CACHE_KEY)
        if key is not None and self.cache is not None:
            facts = {"x-aiofast-model": ctx.served_model} if ctx.served_model else {}
            await self.cache.store(key, ctx.status, body, facts)

    def facts_headers(self, ctx: RequestContext) -> dict[str, str]:
        """The ``x-aiofast-*`` headers of a response."""
        headers = {
            "x-aiofast-request-id": ctx.request_id,
            "x-aiofast-policy-version": self.policy.version,
        }
        if ctx.served is not None:
            headers["x-aiofast-model"] = ctx.served_model or ctx.served.deployment.model
            headers["x-aiofast-tier"] = ctx.tier
            headers["x-aiofast-route"] = ctx.route
        charge = ctx.total_cost
        if charge is not None:
            headers["x-aiofast-input-tokens"] = str(charge.prompt_tokens)
            headers["x-aiofast-output-tokens"] = str(charge.output_tokens)
            headers["x-aiofast-cost-usd"] = (
                "unknown" if charge.usd is None else f"{charge.usd:.10f}"
            )
        headers.update(ctx.response_headers)
        return headers

    def refuse(self, ctx: RequestContext, refusal: RequestRefused) -> None:
        """Record that ``refusal`` ends the request (settle still has to run)."""
        ctx.status = refusal.status
        if not ctx.error_type:
            ctx.error_type = refusal.code or refusal.type

    async def _attempt(self, ctx: RequestContext, candidate: Candidate) -> UpstreamCall:
        return await self.upstreams.send(
            candidate.deployment, _PATHS[ctx.api], self._upstream_body(ctx, candidate)
        )

    def _upstream_body(self, ctx: RequestContext, candidate: Candidate) -> bytes:
        model = candidate.deployment.model
        kind = self.policy.upstream(candidate.deployment.upstream).kind
        ask_usage = (
            ctx.stream and ctx.api == API_CHAT and not ctx.wants_usage and kind != "anthropic"
        )
        if ctx.raw and model == ctx.requested_model and not ask_usage:
            return ctx.raw
        body = dict(ctx.body)
        body["model"] = model
        if ask_usage:
            # The client did not ask for usage; ask anyway, and strip it on the way back.
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        return orjson.dumps(body)

    def _count(self, ctx: RequestContext) -> None:
        model = self._count_models.get(ctx.requested_model, ctx.requested_model)
        body = ctx.body
        if ctx.api == API_EMBEDDINGS:
            inputs = body["input"]
            texts = [inputs] if isinstance(inputs, str) else inputs
            ctx.input_tokens = sum(count_tokens(text, model=model) for text in texts)
            return
        if ctx.api == API_MESSAGES:
            # Anthropic's tokenizer is not public: OpenAI's accounting is the estimate.
            ctx.input_estimated = True
            text = orjson.dumps([body.get("system"), body.get("messages")]).decode()
            ctx.input_tokens = count_tokens(text, model=model)
            return
        try:
            counted = count_chat(body, model=model)
        except ValueError as exc:
            raise bad_request(f"Invalid messages: {exc}", param="messages") from None
        ctx.input_tokens = counted.prompt_tokens
        ctx.input_estimated = counted.estimated

    def _stream_reader(self, ctx: RequestContext, *, need_text: bool) -> StreamReader:
        deployment = ctx.deployment
        counter = TokenCounter(model=deployment.model if deployment else ctx.requested_model)
        if ctx.api == API_MESSAGES:
            return AnthropicStreamReader(counter, need_text=need_text)
        return OpenAIStreamReader(counter, need_text=need_text)

    def _take_reading(self, ctx: RequestContext, reading: Reading) -> None:
        deployment = ctx.deployment
        ctx.served_model = reading.model or (deployment.model if deployment else "")
        ctx.tool_calls = reading.tool_calls
        ctx.response_text = reading.text
        if reading.usage is not None:
            ctx.usage, ctx.usage_source = reading.usage, "provider"
        else:
            ctx.output_tokens_counted = count_tokens(reading.text, model=ctx.served_model)

    def _take_stream(self, ctx: RequestContext, reader: StreamReader, *, complete: bool) -> None:
        deployment = ctx.deployment
        ctx.served_model = reader.model or (deployment.model if deployment else "")
        ctx.tool_calls = reader.tool_calls
        if complete and reader.usage is not None:
            ctx.usage, ctx.usage_source = reader.usage, "provider"
        else:
            # A stream cut short has no trustworthy final usage: count what was sent.
            ctx.usage, ctx.cost = None, None
            ctx.output_tokens_counted = reader.output_tokens

    def _counted_usage(self, ctx: RequestContext) -> dict[str, Any]:
        if ctx.api == API_MESSAGES:
            return {"input_tokens": ctx.input_tokens, "output_tokens": ctx.output_tokens_counted}
        return {
            "prompt_tokens": ctx.input_tokens,
            "completion_tokens": ctx.output_tokens_counted,
            "total_tokens": ctx.input_tokens + ctx.output_tokens_counted,
        }

    def _price(self, ctx: RequestContext) -> None:
        if ctx.usage is None:
            return
        model = self._price_model(ctx.served_model, ctx.deployment)
        try:
            ctx.cost = cost(model, ctx.usage, table=self.prices)
        except ValueError as exc:
            # A provider's usage that cannot be read is replaced by the gateway's count.
            logger.warning("request %s: unusable provider usage (%s)", ctx.request_id, exc)
            ctx.usage, ctx.usage_source = self._counted_usage(ctx), "counted"
            ctx.cost = cost(model, ctx.usage, table=self.prices)

    def _price_model(self, served: str, deployment: DeploymentPolicy | None) -> str:
        """The price-table entry to charge: ``price_as``, else the model that answered
        when the table knows it, else the deployment's model. Cached per pair."""
        key = (served, deployment.name if deployment else "")
        model = self._price_models.get(key)
        if model is None:
            model = served
            if deployment is not None:
                if deployment.price_as:
                    model = deployment.price_as
                elif not served or self.prices.get(served) is None:
                    model = deployment.model
            if len(self._price_models) < 4096:
                self._price_models[key] = model
        return model

    def _bill_superseded(self, ctx: RequestContext) -> None:
        """Price the answers a cascade superseded, once (the caller's list is taken): they
        count in ``ctx.total_cost`` (header, limits) and get ledger rows of their own."""
        for answer in ctx.state.pop(SUPERSEDED, None) or ():
            deployment = self.policy.deployment(answer.deployment)
            price_model = partial(self._price_model, deployment=deployment)
            ctx.superseded.append(
                price_superseded(ctx, answer, deployment, price_model, self.prices)
            )

    def _upstream_error(
        self, ctx: RequestContext, call: UpstreamCall, raw: bytes
    ) -> RequestRefused:
        status, name = call.status, call.upstream.name
        message, kind, code, param = _error_fields(raw)
        ctx.error_type = f"upstream_{status}"
        if status == 429:
            return rate_limited(
                f"Upstream {name!r} is rate limiting: {message}",
                retry_after=retry_after(call.headers),
                code=code or "rate_limit_exceeded",
            )
        if 400 <= status < 500:
            return RequestRefused(
                status, message, type=kind or "invalid_request_error", code=code, param=param
            )
        return upstream_failed(f"Upstream {name!r} answered {status}: {message}")

    def _event(self, ctx: RequestContext) -> UsageEvent:
        identity, charge, deployment = ctx.identity, ctx.cost, ctx.deployment
        now = time.perf_counter()
        return UsageEvent(
            request_id=ctx.request_id,
            parent_id=ctx.parent_id,
            started_at=ctx.started_at,
            finished_at=ctx.started_at + (now - ctx.started),
            api=ctx.api,
            stream=ctx.stream,
            key=identity.key,
            user=identity.user,
            team=identity.team,
            requested_model=ctx.requested_model,
            model=ctx.served_model,
            tier=ctx.tier,
            route=ctx.route,
            upstream=deployment.upstream if deployment else "",
            deployment=deployment.name if deployment else "",
            policy_version=self.policy.version,
            status=ctx.status,
            error_type=ctx.error_type,
            usage_source=ctx.usage_source,
            input_tokens=charge.prompt_tokens if charge else 0,
            cached_tokens=charge.cached_tokens if charge else 0,
            cache_write_tokens=charge.cache_write_tokens if charge else 0,
            output_tokens=charge.output_tokens if charge else 0,
            reasoning_tokens=charge.reasoning_tokens if charge else 0,
            cost_usd=charge.usd if charge else (0.0 if ctx.served is None else None),
            latency_ms=(now - ctx.started) * 1000,
            ttft_ms=None if ctx.ttft is None else ctx.ttft * 1000,
            upstream_ms=ctx.upstream_wait * 1000 if ctx.served is not None else None,
            attempts=ctx.attempts,
            tool_calls=",".join(ctx.tool_calls),
            tool_call_count=len(ctx.tool_calls),
        )


def _counting_models(policy: Policy) -> dict[str, str]:
    """For each name a client may ask for, the model whose tokenizer counts its input."""
    models = {d.name: d.model for d in policy.deployments}
    models.update({d.model: d.model for d in policy.deployments})
    for tier, members in policy.tiers.items():
        models[tier] = policy.deployment(members[0]).model
    return models


def _replace_text(api: str, body: dict[str, Any], text: str) -> dict[str, Any]:
    if api == API_MESSAGES:
        body["content"] = [{"type": "text", "text": text}]
    elif body.get("choices"):
        body["choices"][0].setdefault("message", {})["content"] = text
    return body


def _error_fields(raw: bytes) -> tuple[str, str | None, str | None, str | None]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        text = raw[:200].decode("utf-8", errors="replace").strip()
        return (text or "no error message"), None, None, None
    return (
        str(error.get("message") or error.get("type") or "no error message"),
        error.get("type") if isinstance(error.get("type"), str) else None,
        error.get("code") if isinstance(error.get("code"), str) else None,
        error.get("param") if isinstance(error.get("param"), str) else None,
    )
