"""Prompt tokens of an OpenAI chat completion request, as the provider bills them.

Messages follow OpenAI's published accounting (the cookbook "How to count tokens with
tiktoken"): each message costs 3 tokens plus its role, content and name (a name adds
1 more), and the reply is primed with 3. Tool definitions use the cookbook's formula;
image parts use the documented tile or patch formula.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from aiofast import _core
from aiofast.errors import InvalidInputError
from aiofast.tokens._images import image_size_from_data_url, image_tokens
from aiofast.tokens._models import DEFAULT_ENCODING, bare_model_id, encoding_for_model

__all__ = ["ChatTokens", "count_chat"]

_REPLY_PRIMING = 3
# Each assistant tool call is rendered with a few framing tokens that are not
# documented; tiktoken-rs and others use 1, the lowest value seen in measurements.
_TOOL_CALL_OVERHEAD = 1


@dataclass(frozen=True)
class ChatTokens:
    """Prompt tokens of a chat request.

    ``estimated`` is true when the count relies on undocumented accounting (an unknown
    model, assistant tool calls, audio or file parts). ``image_bound`` is ``"upper"``
    when some image's size was unknown and its largest possible cost was counted.
    """

    prompt_tokens: int
    encoding: str
    estimated: bool
    image_bound: str | None


@dataclass(frozen=True)
class _ToolCosts:
    func_init: int
    prop_init: int = 3
    prop_key: int = 3
    enum_init: int = -3
    enum_item: int = 3
    func_end: int = 12


class _Counter:
    """Accumulates the count of one request.

    Texts are collected and counted in one call into the core at the end (``total``):
    one crossing per request rather than one per role, content and name.
    """

    def __init__(self, model: str, encoding: str, estimated: bool) -> None:
        self.model = model
        self.encoding = encoding
        self.tokens = 0
        self.texts: list[str] = []
        self.estimated = estimated
        self.image_upper_bound = False

    def add(self, value: object) -> None:
        if isinstance(value, str):
            self.texts.append(value)
        elif value is not None:
            self.texts.append(orjson.dumps(value).decode())

    def total(self) -> int:
        """Framing tokens plus the tokens of every text added."""
        return self.tokens + sum(_core.count_tokens_batch(self.texts, self.encoding))

    def content(self, content: object) -> None:
        if not isinstance(content, Sequence) or isinstance(content, str):
            self.add(content)
            return
        for part in content:
            if isinstance(part, Mapping):
                self.part(part)
            else:
                self.add(part)

    def part(self, part: Mapping[str, Any]) -> None:
        # The part's "type" string is framing, not text, and is not billed.
        kind = part.get("type")
        if kind == "text":
            self.add(part.get("text"))
        elif kind == "refusal":
            self.add(part.get("refusal"))
        elif kind == "image_url":
            self.image(part.get("image_url"))
        else:
            self.estimated = True
            self.add({k: v for k, v in part.items() if k != "type"})

    def image(self, image: object) -> None:
        if isinstance(image, str):
            url, detail = image, "auto"
        elif isinstance(image, Mapping):
            url, detail = str(image.get("url", "")), str(image.get("detail", "auto"))
        else:
            url, detail = "", "auto"
        cost = image_tokens(self.model, detail, image_size_from_data_url(url))
        self.tokens += cost.tokens
        self.image_upper_bound = self.image_upper_bound or cost.upper_bound

    def message(self, message: Mapping[str, Any], per_message: int, per_name: int) -> None:
        self.tokens += per_message
        self.add(message.get("role"))
        self.content(message.get("content"))
        if message.get("name"):
            self.add(message["name"])
            self.tokens += per_name
        if message.get("refusal"):
            self.add(message["refusal"])
        calls = list(message.get("tool_calls") or ())
        if message.get("function_call"):
            calls.append({"function": message["function_call"]})
        for call in calls:
            self.estimated = True
            function = call.get("function", {}) if isinstance(call, Mapping) else {}
            self.tokens += _TOOL_CALL_OVERHEAD
            self.add(function.get("name"))
            self.add(function.get("arguments"))

    def tools(self, functions: Sequence[Mapping[str, Any]]) -> None:
        costs = _ToolCosts(func_init=7 if self.encoding == "o200k_base" else 10)
        for function in functions:
            self.tokens += costs.func_init
            name = str(function.get("name", ""))
            description = str(function.get("description", "")).removesuffix(".")
            self.add(f"{name}:{description}")
            parameters = function.get("parameters") or {}
            properties = parameters.get("properties") or {}
            if properties:
                self.tokens += costs.prop_init
            for key, spec in properties.items():
                self.tokens += costs.prop_key
                spec = spec if isinstance(spec, Mapping) else {}
                if "enum" in spec:
                    self.tokens += costs.enum_init
                    for item in spec["enum"]:
                        self.tokens += costs.enum_item
                        self.add(item)
                kind = spec.get("type", "")
                description = str(spec.get("description", "")).removesuffix(".")
                self.add(f"{key}:{kind}:{description}")
        self.tokens += costs.func_end


def _functions(request: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    functions = [
        tool["function"]
        for tool in request.get("tools") or ()
        if isinstance(tool, Mapping) and isinstance(tool.get("function"), Mapping)
    ]
    functions += [f for f in request.get("functions") or () if isinstance(f, Mapping)]
    return functions


def _parse(request: Mapping[str, Any] | bytes) -> Mapping[str, Any]:
    if isinstance(request, (bytes, bytearray, memoryview)):
        try:
            request = orjson.loads(request)
        except orjson.JSONDecodeError as exc:
            raise InvalidInputError(f"request is not valid JSON: {exc}") from None
    if not isinstance(request, Mapping):
        raise InvalidInputError("request must be a JSON object with a 'messages' list")
    messages = request.get("messages")
    if not isinstance(messages, Sequence) or isinstance(messages, str):
        raise InvalidInputError("request['messages'] must be a list of message objects")
    return request


def count_chat(request: Mapping[str, Any] | bytes, *, model: str | None = None) -> ChatTokens:
    """Prompt tokens an OpenAI chat completion request will be billed for.

    ``request`` is the request body, as a mapping or raw JSON bytes; ``model`` defaults
    to ``request["model"]``. Reproduces the cookbook's published examples exactly.
    """
    body = _parse(request)
    model = model if model is not None else body.get("model")
    if isinstance(model, str) and model:
        resolved = encoding_for_model(model)
        counter = _Counter(model, resolved.encoding, resolved.estimated)
    else:
        counter = _Counter("", DEFAULT_ENCODING, estimated=True)

    # gpt-3.5-turbo-0301 framed messages differently: 4 per message, and a name
    # replaced the role, saving one token.
    legacy = bare_model_id(counter.model).startswith("gpt-3.5-turbo-0301")
    per_message, per_name = (4, -1) if legacy else (3, 1)
    for message in body["messages"]:
        if not isinstance(message, Mapping):
            raise InvalidInputError("every item of request['messages'] must be an object")
        counter.message(message, per_message, per_name)
    counter.tokens += _REPLY_PRIMING

    functions = _functions(body)
    if functions:
        counter.tools(functions)
    return ChatTokens(
        prompt_tokens=counter.total(),
        encoding=counter.encoding,
        estimated=counter.estimated,
        image_bound="upper" if counter.image_upper_bound else None,
    )
