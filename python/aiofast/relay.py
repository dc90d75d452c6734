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
        # Whether the checker was fed text it has not been told the end of yet.
        self.text_open = False
        self.last_text_event: tuple[dict[str, Any], str] | None = None

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
            if self.checker is not None:
                checked = self._checked(self.checker, event, info, parts)
                if checked is not None:
                    parts.append(checked)
                    continue
            if info.usage_only:
                part = self._usage_event(info)
                if part:
                    parts.append(part)
                continue
            parts.append(event.raw)
        return b"".join(parts)

    def _checked(
        self, checker: StreamChecker, event: SSEEvent, info: EventInfo, parts: list[bytes]
    ) -> bytes | None:
        """Run the stream checker over one event: the event rewritten, or None to go on
        with it as it is. When the event ends the text, the text the checker held back
        goes out first, in the event itself or in a text event of its own before it."""
        api = self.ctx.api
        ends = self.text_open and _ends_text(api, event, info)
        if info.delta is None and not ends:
            return None
        replacement = checker.feed(info.delta) if info.delta is not None else ""
        self.text_open = True
        if info.delta is not None and info.data is not None:
            self.last_text_event = (info.data, event.event)
        if ends:
            self.text_open = False
            held = checker.finish()
            if info.delta is None:
                if held:
                    parts.append(self._text_event(held))
                return None
            replacement += held
        if replacement == info.delta or info.data is None:
            return None
        data = _replace_delta(api, info.data, replacement)
        return format_event(orjson.dumps(data), event.event or None)

    def _text_event(self, text: str) -> bytes:
        """A text event like the last one the provider sent, carrying ``text``."""
        if self.last_text_event is None:
            return b""
        data, name = self.last_text_event
        copy = orjson.loads(orjson.dumps(data))
        if self.ctx.api != API_MESSAGES:
            for choice in copy.get("choices") or ():
                choice["logprobs"] = None
        return format_event(orjson.dumps(_replace_delta(self.ctx.api, copy, text)), name or None)

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


def _ends_text(api: str, event: SSEEvent, info: EventInfo) -> bool:
    """Whether an event closes the answer's text: OpenAI's finish reason, usage-only
    chunk or ``[DONE]``; the end of an Anthropic content block or message."""
    if api == API_MESSAGES:
        kind = event.event or (info.data or {}).get("type")
        return kind in ("content_block_stop", "message_delta", "message_stop")
    if info.done or info.usage_only:
        return True
    choices = (info.data or {}).get("choices") or ()
    return any(choice.get("finish_reason") for choice in choices)


def _replace_delta(api: str, data: dict[str, Any], text: str) -> dict[str, Any]:
    if api == API_MESSAGES:
        data["delta"]["text"] = text
    else:
        data["choices"][0]["delta"]["content"] = text
    return data
