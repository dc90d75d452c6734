"""``aiofast.Client``: LLM calls from Python code through the same pipeline as the gateway.

    async with aiofast.Client(policy) as client:
        result = await client.chat([{"role": "user", "content": "Hi"}], model="small")
        print(result.text, result.cost_usd)

Every call is counted, guarded, limited, routed, priced and written to the ledger like
a gateway request. Inside a handler under :func:`aiofast.middleware`, calls are
attributed to the caller the middleware identified, carry the app request's
``x-aiofast-tags`` (unless ``tags=`` says otherwise), and are tied to the app request.
A refusal (limit, guard, unknown model, upstream failure) raises
:class:`~aiofast.refusals.RequestRefused`, whose ``status`` and ``message`` say why.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import orjson

from aiofast.auth import ANONYMOUS, Identity
from aiofast.context import RequestContext
from aiofast.parsing import API_CHAT, API_EMBEDDINGS
from aiofast.pipeline import Pipeline
from aiofast.policy import Policy
from aiofast.refusals import RequestRefused, bad_request
from aiofast.routing.tags import check_tags
from aiofast.sse import SSEParser

__all__ = ["ChatResult", "Client", "current_request"]

# The app request being handled (set by the middleware), so calls inherit its caller.
current_request: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "aiofast_current_request", default=None
)


@dataclass(frozen=True, slots=True)
class ChatResult:
    """A provider's answer and what aiofast recorded about it."""

    response: dict[str, Any]
    request_id: str
    model: str
    tier: str
    input_tokens: int
    output_tokens: int
    cost_usd: float | None

    @property
    def text(self) -> str:
        choices = self.response.get("choices") or [{}]
        content = (choices[0].get("message") or {}).get("content")
        return content if isinstance(content, str) else ""


class Client:
    """Calls models through a policy's pipeline; share one per application."""

    def __init__(self, policy: Policy | Pipeline) -> None:
        self.pipeline = policy if isinstance(policy, Pipeline) else Pipeline(policy)
        self._owns_pipeline = not isinstance(policy, Pipeline)

    async def __aenter__(self) -> Client:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        await self.pipeline.start()

    async def close(self) -> None:
        """Close the pipeline if this client made it (it then flushes the ledger)."""
        if self._owns_pipeline:
            await self.pipeline.close()

    async def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model: str | None = None,
        identity: Identity | None = None,
        tags: Sequence[str] | None = None,
        **params: Any,
    ) -> ChatResult:
        """One chat completion; ``params`` go to the provider (``max_tokens``, ``tools``...)."""
        body = self._body(messages, model, params, stream=False)
        ctx = self._context(API_CHAT, body, identity, tags)
        pipeline = self.pipeline
        try:
            await pipeline.admit(ctx)
            call = await pipeline.call(ctx)
            raw = await pipeline.complete(ctx, call)
            return _result(orjson.loads(raw), ctx)
        except RequestRefused as refusal:
            pipeline.refuse(ctx, refusal)
            raise
        finally:
            pipeline.settle(ctx)

    async def stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model: str | None = None,
        identity: Identity | None = None,
        tags: Sequence[str] | None = None,
        **params: Any,
    ) -> AsyncIterator[dict[str, Any]]:
        """Stream chunks (``chat.completion.chunk`` dicts) as they arrive.

        Stopping early (``break``) cancels the upstream call; usage is still recorded.
        A stream that breaks raises a 502 :class:`~aiofast.refusals.RequestRefused`.
        """
        body = self._body(messages, model, params, stream=True)
        ctx = self._context(API_CHAT, body, identity, tags)
        pipeline = self.pipeline
        chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        task: asyncio.Task[None] | None = None
        try:
            await pipeline.admit(ctx)
            call = await pipeline.call(ctx)
            if call.status >= 400:
                await pipeline.complete(ctx, call)
            task = asyncio.create_task(_relay_into(pipeline, ctx, call, chunks))
            parser = SSEParser()
            while (data := await chunks.get()) is not None:
                for event in parser.feed(data):
                    chunk = _chunk(event.data)
                    if chunk is not None:
                        yield chunk
            await task
        except RequestRefused as refusal:
            pipeline.refuse(ctx, refusal)
            raise
        finally:
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            pipeline.settle(ctx)

    async def embeddings(
        self,
        texts: str | Sequence[str],
        *,
        model: str | None = None,
        identity: Identity | None = None,
        tags: Sequence[str] | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        body = {"model": model or self._default_model(), "input": texts, **params}
        ctx = self._context(API_EMBEDDINGS, body, identity, tags)
        pipeline = self.pipeline
        try:
            await pipeline.admit(ctx)
            call = await pipeline.call(ctx)
            answer: dict[str, Any] = orjson.loads(await pipeline.complete(ctx, call))
            return answer
        except RequestRefused as refusal:
            pipeline.refuse(ctx, refusal)
            raise
        finally:
            pipeline.settle(ctx)

    def _default_model(self) -> str:
        policy = self.pipeline.policy
        model = policy.server.default_tier or next(iter(policy.tiers), None)
        if model is None:
            raise bad_request("no model given and the policy has no tier (server.default_tier)")
        return model

    def _body(
        self,
        messages: Sequence[Mapping[str, Any]],
        model: str | None,
        params: Mapping[str, Any],
        *,
        stream: bool,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model or self._default_model(),
            "messages": [dict(m) for m in messages],
            **params,
        }
        if stream:
            body["stream"] = True
        return body

    def _context(
        self,
        api: str,
        body: dict[str, Any],
        identity: Identity | None,
        tags: Sequence[str] | None,
    ) -> RequestContext:
        """A call's context; what it leaves out (caller, tags) comes from the app request
        the middleware is handling, if any."""
        parent = current_request.get()
        if identity is None:
            identity = parent.identity if parent is not None else ANONYMOUS
        ctx = self.pipeline.context(api, body, identity=identity)
        if tags is not None:
            ctx.tags = check_tags(tags, source="tags argument")
        elif parent is not None:
            ctx.tags = list(parent.tags)
        if parent is not None:
            ctx.parent_id = parent.request_id
        return ctx


async def _relay_into(
    pipeline: Pipeline, ctx: RequestContext, call: Any, chunks: asyncio.Queue[bytes | None]
) -> None:
    async def write(data: bytes) -> None:
        chunks.put_nowait(data)

    try:
        await pipeline.relay(ctx, call, write)
    finally:
        chunks.put_nowait(None)


def _chunk(data: str) -> dict[str, Any] | None:
    if data == "[DONE]":
        return None
    value = orjson.loads(data)
    if isinstance(value, dict) and "error" in value:
        error = value["error"] or {}
        raise RequestRefused(
            502,
            str(error.get("message", "the stream broke")),
            type=str(error.get("type", "upstream_error")),
            code=error.get("code"),
        )
    return value if isinstance(value, dict) else None


def _result(answer: dict[str, Any], ctx: RequestContext) -> ChatResult:
    charge = ctx.total_cost
    return ChatResult(
        response=answer,
        request_id=ctx.request_id,
        model=ctx.served_model,
        tier=ctx.tier,
        input_tokens=charge.prompt_tokens if charge else ctx.input_tokens,
        output_tokens=charge.output_tokens if charge else ctx.output_tokens_counted,
        cost_usd=charge.usd if charge else None,
    )
