"""Relaying one SSE stream from a provider to a client, event by event.

Each event is parsed once: the stream reader keeps usage, counts output tokens and
notes tool calls; the output guard's stream checker may rewrite or stop the text; the
usage-only chunk is stripped when the client did not ask for usage, or extended with
the gateway's facts (request id, tier, cost) when it did. Upstream and client waits are
timed apart from the gateway's own work, for the overhead histogram.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from aiofast.context import RequestContext
from aiofast.parsing import API_CHAT, API_MESSAGES
from aiofast.refusals import RequestRefused, upstream_failed
from aiofast.sse import SSEEvent, SSEParser, format_event
from aiofast.stages import StreamChecker
from aiofast.upstream import UpstreamCall
from aiofast.usage import EventInfo, StreamReader

__all__ = ["Sink", "StreamRelay", "stream_facts"]

Sink = Callable[[bytes], Awaitable[None]]


class StreamRelay:
    """The loop of one relayed stream: events in, events (possibly edited) out."""

    def __init__(
        self,
        ctx: RequestContext,
        reader: StreamReader,
        checker: StreamChecker | None,
        price: Callable[[RequestContext], None],
    ) -> None:
        self.ctx = ctx
        self.price = price
        self.reader = reader
        self.checker = checker
        self.strip_usage = ctx.api == API_CHAT and not ctx.wants_usage
        self.upstream_error_sent = False

    async def run(self, call: UpstreamCall, write: Sink) -> RequestRefused | None:
        """Relay until the upstream ends; the failure that ended it, if any."""
        ctx, parser = self.ctx, SSEParser()
        chunks = call.chunks()
        while True:
            waited = time.perf_counter()
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                ctx.upstream_wait += time.perf_counter() - waited
                break
            except RequestRefused as refusal:
                ctx.upstream_wait += time.perf_counter() - waited
                return refusal
            arrived = time.perf_counter()
            ctx.upstream_wait += arrived - waited
            if ctx.ttft is None:
                ctx.ttft = arrived - ctx.started
            try:
                out = self._events(parser.feed(chunk))
            except RequestRefused as refusal:
                ctx.error_type = "output_blocked"
                return refusal
            if out:
                writing = time.perf_counter()
                await write(out)
                ctx.client_wait += time.perf_counter() - writing
            if self.reader.error is not None:
                return upstream_failed(f"Upstream stream error: {self.reader.error}")
        tail = parser.finish()
        if tail is not None:
            out = self._events([tail])
            if out:
                await write(out)
        if self.checker is not None and self.reader.done:
            try:
                self.checker.finish()
            except RequestRefused as refusal:
                ctx.error_type = "output_blocked"
                return refusal
        return None

    def _events(self, events: list[SSEEvent]) -> bytes:
        parts: list[bytes] = []
        for event in events:
            info = self.reader.event(event)
            if info.error is not None:
                # The provider's own error event, already in its format: pass it on.
                self.upstream_error_sent = True
                self.ctx.error_type = "upstream_stream_error"
                parts.append(event.raw)
                break
            if info.usage_only:
                part = self._usage_event(info)
                if part:
                    parts.append(part)
                continue
            if info.delta is not None and self.checker is not None:
                replacement = self.checker.feed(info.delta)
                if replacement != info.delta and info.data is not None:
                    data = _replace_delta(self.ctx.api, info.data, replacement)
                    parts.append(format_event(orjson.dumps(data), event.event or None))
                    continue
            parts.append(event.raw)
        return b"".join(parts)

    def _usage_event(self, info: EventInfo) -> bytes:
        ctx, reader = self.ctx, self.reader
        ctx.usage, ctx.usage_source = reader.usage, "provider"
        ctx.served_model = reader.model or ctx.served_model
        self.price(ctx)
        if self.strip_usage or info.data is None:
            return b""
        data = dict(info.data)
        data["aiofast"] = stream_facts(ctx)
        return format_event(orjson.dumps(data))


def stream_facts(ctx: RequestContext) -> dict[str, Any]:
    charge = ctx.cost
    return {
        "request_id": ctx.request_id,
        "model": ctx.served_model,
        "tier": ctx.tier,
        "route": ctx.route,
        "input_tokens": charge.prompt_tokens if charge else None,
        "output_tokens": charge.output_tokens if charge else None,
        "cost_usd": None if charge is None or charge.usd is None else round(charge.usd, 10),
    }


def _replace_delta(api: str, data: dict[str, Any], text: str) -> dict[str, Any]:
    if api == API_MESSAGES:
        data["delta"]["text"] = text
    else:
        data["choices"][0]["delta"]["content"] = text
    return data
