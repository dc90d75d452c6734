"""Reading what a provider reports: usage, tool calls and text, whole or streamed.

Two wire formats are understood, OpenAI Chat Completions and Anthropic Messages. For
streams, :class:`OpenAIStreamReader` and :class:`AnthropicStreamReader` look at one SSE
event at a time: they keep the latest usage the provider sent (Anthropic's
``message_delta`` usage supersedes ``message_start``'s, field by field), keep the text
as it arrives so its output tokens can be counted at any point (for providers that
send no usage, streams cut short, and limits enforced mid-stream), collect tool-call names,
and say whether the event may be forwarded. Usage mappings are kept in the provider's
own shape; :func:`aiofast.prices.cost` understands both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from aiofast.sse import SSEEvent
from aiofast.tokens import TokenCounter

__all__ = [
    "AnthropicStreamReader",
    "EventInfo",
    "OpenAIStreamReader",
    "StreamReader",
    "read_anthropic_body",
    "read_openai_body",
]


@dataclass(slots=True)
class Reading:
    """What a response said about itself."""

    usage: dict[str, Any] | None = None
    model: str | None = None
    text: str = ""
    tool_calls: list[str] = field(default_factory=list)


@dataclass(slots=True)
class EventInfo:
    """The verdict on one stream event.

    ``usage_only``: the event only carries usage (the gateway strips it when the client
    did not ask for usage). ``delta``: text it adds to the answer. ``done``: the
    provider's normal end. ``error``: the provider reported a failure in the stream.
    """

    usage_only: bool = False
    delta: str | None = None
    done: bool = False
    error: str | None = None
    data: dict[str, Any] | None = None


def read_openai_body(body: dict[str, Any]) -> Reading:
    reading = Reading(usage=_mapping(body.get("usage")), model=_str(body.get("model")))
    texts: list[str] = []
    for choice in body.get("choices") or ():
        message = choice.get("message") or {}
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        for call in message.get("tool_calls") or ():
            name = (call.get("function") or {}).get("name")
            if isinstance(name, str):
                reading.tool_calls.append(name)
    reading.text = "".join(texts)
    return reading


def read_anthropic_body(body: dict[str, Any]) -> Reading:
    reading = Reading(usage=_mapping(body.get("usage")), model=_str(body.get("model")))
    texts: list[str] = []
    for block in body.get("content") or ():
        if block.get("type") == "text":
            texts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_use":
            reading.tool_calls.append(str(block.get("name", "")))
    reading.text = "".join(texts)
    return reading


class StreamReader:
    """Common state of the two stream readers."""

    def __init__(self, counter: TokenCounter, *, need_text: bool = False) -> None:
        self._counter = counter
        # With need_text (an output guard reads every delta), every event is parsed as it
        # comes; otherwise plain content chunks are kept unparsed until a count is needed.
        self.need_text = need_text
        self._deferred: list[str] = []
        # Text waits here and reaches the counter in one push when a count is asked for:
        # the total is the same (the counter's total never depends on chunk boundaries)
        # and most streams end with provider usage, so most are never counted at all.
        self._pending: list[str] = []
        self.usage: dict[str, Any] | None = None
        self.model: str | None = None
        self.tool_calls: list[str] = []
        self.done = False
        self.error: str | None = None

    def event(self, event: SSEEvent) -> EventInfo:
        raise NotImplementedError

    def _chunk(self, data: str) -> EventInfo:
        """Read one event's data in full."""
        return self.event(SSEEvent("", data, b""))

    @property
    def output_tokens(self) -> int:
        """Output tokens streamed so far (text and tool-call arguments), exactly."""
        if self._deferred:
            deferred, self._deferred = self._deferred, []
            for data in deferred:
                self._chunk(data)
        if self._pending:
            self._counter.push("".join(self._pending))
            self._pending.clear()
        return self._counter.total

    def _push(self, text: str) -> None:
        if text:
            self._pending.append(text)


_PLAIN = EventInfo()


class OpenAIStreamReader(StreamReader):
    def event(self, event: SSEEvent) -> EventInfo:
        data = event.data
        if data == "[DONE]":
            self.done = True
            return EventInfo(done=True)
        if self.model is not None and not self.need_text and _plain_chunk(data):
            # Most chunks only add text: keep them for a later count, skip the JSON work.
            self._deferred.append(data)
            return _PLAIN
        return self._chunk(data)

    def _chunk(self, data: str) -> EventInfo:
        chunk = _loads(data)
        if chunk is None:
            return EventInfo()
        if "error" in chunk:
            self.error = _error_message(chunk["error"])
            return EventInfo(error=self.error, data=chunk)
        if self.model is None:
            self.model = _str(chunk.get("model"))
        usage = chunk.get("usage")
        choices = chunk.get("choices") or ()
        if isinstance(usage, dict):
            self.usage = usage
        delta_text: list[str] = []
        for choice in choices:
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                delta_text.append(content)
            for call in delta.get("tool_calls") or ():
                name = (call.get("function") or {}).get("name")
                if isinstance(name, str) and name:
                    self.tool_calls.append(name)
                arguments = (call.get("function") or {}).get("arguments")
                if isinstance(arguments, str):
                    self._push(arguments)
        text = "".join(delta_text)
        self._push(text)
        return EventInfo(
            usage_only=isinstance(usage, dict) and not choices,
            delta=text or None,
            data=chunk,
        )


class AnthropicStreamReader(StreamReader):
    def event(self, event: SSEEvent) -> EventInfo:
        data = _loads(event.data)
        if data is None:
            return EventInfo()
        kind = event.event or str(data.get("type", ""))
        if kind == "message_start":
            message = data.get("message") or {}
            self.model = _str(message.get("model"))
            self.usage = dict(message.get("usage") or {})
        elif kind == "message_delta":
            # Later usage supersedes earlier usage field by field; it is cumulative.
            update = data.get("usage") or {}
            self.usage = {**(self.usage or {}), **update}
        elif kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                self.tool_calls.append(str(block.get("name", "")))
        elif kind == "content_block_delta":
            delta = data.get("delta") or {}
            text = delta.get("text") if delta.get("type") == "text_delta" else None
            partial = delta.get("partial_json")
            if isinstance(partial, str):
                self._push(partial)
            if isinstance(text, str):
                self._push(text)
                return EventInfo(delta=text, data=data)
        elif kind == "message_stop":
            self.done = True
            return EventInfo(done=True, data=data)
        elif kind == "error":
            self.error = _error_message(data.get("error"))
            return EventInfo(error=self.error, data=data)
        return EventInfo(data=data)


def _plain_chunk(data: str) -> bool:
    """Whether an OpenAI chunk can hold nothing but text: no usage object, no tool call,
    no error. Inside JSON strings quotes are escaped, so text cannot fake these keys."""
    return '"usage":{' not in data and '"tool_calls"' not in data and '"error"' not in data


def _loads(data: str) -> dict[str, Any] | None:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _mapping(value: object) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _error_message(error: object) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error.get("type") or "error")
    return str(error)
