"""Output constraints that decide whether a cascade escalates to a larger tier.

An answer fails when JSON was asked for and the text is not a JSON value (or misses a
required key of an object schema), when the text opens like a refusal, or when an
output guard says so.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from aiofast.routing.spec import CascadeSpec

__all__ = ["OutputCheck", "answer_text", "json_wanted"]

GuardVerdict = Callable[[str], bool]


def json_wanted(body: Mapping[str, Any]) -> tuple[bool, Mapping[str, Any] | None]:
    """Whether an OpenAI chat request asks for JSON, and the schema it gives, if any."""
    fmt = body.get("response_format")
    if not isinstance(fmt, Mapping):
        return False, None
    kind = fmt.get("type")
    if kind == "json_schema":
        holder = fmt.get("json_schema")
        schema = holder.get("schema") if isinstance(holder, Mapping) else None
        return True, schema if isinstance(schema, Mapping) else None
    return kind == "json_object", None


def answer_text(reply_body: bytes | Mapping[str, Any]) -> str | None:
    """The assistant text of an OpenAI chat completion (or Anthropic message) body, given
    as bytes or already parsed."""
    if isinstance(reply_body, Mapping):
        data = reply_body
    else:
        try:
            data = orjson.loads(reply_body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(data, dict):
            return None
    choices = data.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        message = choices[0].get("message")
        content = message.get("content") if isinstance(message, dict) else None
        return content if isinstance(content, str) else None
    blocks = data.get("content")
    if isinstance(blocks, list):
        return "".join(
            b.get("text", "") for b in blocks if isinstance(b, dict) and b.get("type") == "text"
        )
    return None


@functools.lru_cache(maxsize=32)
def _compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p) for p in patterns)


@dataclass(frozen=True)
class OutputCheck:
    """The constraints of one request's answer; ``failure`` names the first one broken."""

    want_json: bool = False
    schema: Mapping[str, Any] | None = None
    refusals: tuple[re.Pattern[str], ...] = ()
    guard: GuardVerdict | None = None

    @classmethod
    def for_request(
        cls, spec: CascadeSpec, body: Mapping[str, Any], guard: GuardVerdict | None = None
    ) -> OutputCheck:
        want_json, schema = json_wanted(body) if spec.invalid_json else (False, None)
        refusals = _compiled(tuple(spec.refusal_patterns))
        return cls(want_json, schema, refusals, guard if spec.guard_verdict else None)

    def failure(self, reply_body: bytes | Mapping[str, Any]) -> str | None:
        """The first constraint the answer breaks, or None; the body as bytes or parsed."""
        text = answer_text(reply_body)
        if text is None:
            return "unreadable_answer"
        if self.want_json and not self._json_ok(text):
            return "invalid_json"
        if any(p.search(text) for p in self.refusals):
            return "refusal"
        if self.guard is not None and not self.guard(text):
            return "guard"
        return None

    def _json_ok(self, text: str) -> bool:
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            return False
        if self.schema is None or self.schema.get("type") != "object":
            return True
        required = self.schema.get("required", [])
        return isinstance(value, dict) and all(key in value for key in required)
