"""The guardrails in the request pipeline: the ``guard input`` and ``guard output`` stages.

:class:`PolicyGuard` runs the ``[guard]`` rule set of the policy over every chat,
messages and embeddings request before it is admitted (each embedding input is read as
a user message), and over every answer, whole or streamed, before the client sees it.
What each action does here:

- ``block``: the request is refused with a 400 in the API's error format naming the
  rule id and category; the matched text is never echoed.
- ``redact``: the body is rewritten with typed placeholders (``[EMAIL]``) before it
  leaves for the provider; the mapping back to the original text is never kept.
- ``flag``: recorded only, in ``aiofast_guard_findings_total`` and the request log.
- ``route``: the tier the rule names goes to ``ctx.state["guard.routes"]``, which
  routing rules match with ``guard_route_in``.
- on an answer, ``block`` refuses it (the client gets the error, not the text) and
  ``redact`` masks the spans in the text the client receives. A streamed answer is
  scanned delta by delta: ``block`` ends the stream with an error event before the
  matched text leaves, and ``redact`` holds back only the tail a match may still
  continue into, released (masked) when the text ends.
- shadow rules (any action with ``shadow = true``): recorded with action ``shadow``,
  nothing else happens.

Every finding is counted under ``{rule, action}`` and listed (rule id and action, never
text) in ``ctx.state["guard.findings"]``, which the request log line carries.

A chat request with ``response_format: {"type": "json_schema", ...}`` also has its whole
answer checked against that schema; an answer that does not match is refused with a 502
naming the failing locations (never the values).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from prometheus_client import Counter

from aiofast.context import RequestContext
from aiofast.guard import ChatVerdict, Finding, JsonSchema
from aiofast.guard_policy import GuardSettings
from aiofast.parsing import API_CHAT, API_EMBEDDINGS, API_MESSAGES
from aiofast.refusals import RequestRefused, bad_request
from aiofast.stages import StreamChecker

__all__ = ["FINDINGS", "ROUTES", "PolicyGuard"]

logger = logging.getLogger("aiofast.guard")

# Keys of ``ctx.state`` this stage fills.
FINDINGS = "guard.findings"
ROUTES = "guard.routes"

_GUARDED_APIS = (API_CHAT, API_MESSAGES)
# Bodies above this size are scanned on a worker thread (the scan releases the GIL);
# below it the hand-off costs more than the scan.
_THREAD_ABOVE_BYTES = 64 * 1024


class PolicyGuard:
    """Input and output guard over the policy's compiled rule set."""

    def __init__(self, settings: GuardSettings) -> None:
        self._guard = settings.compile()
        # Registered into the gateway's own registry by the pipeline (no global state).
        self.findings = Counter(
            "aiofast_guard_findings",
            "Guardrail findings by rule and the action taken (shadow: recorded only)",
            ["rule", "action"],
            registry=None,
        )

    async def check_input(self, ctx: RequestContext) -> None:
        if ctx.api == API_EMBEDDINGS:
            await self._check_embedding_input(ctx)
        elif ctx.api in _GUARDED_APIS:
            verdict = await self._scan_input(ctx, ctx.body)
            if verdict.redacted:
                ctx.body = dict(verdict.request)
                # An empty raw body makes the pipeline serialise the redacted one.
                ctx.raw = b""

    async def _check_embedding_input(self, ctx: RequestContext) -> None:
        """Embedding inputs are scanned as user messages, so limits, roles and the
        block/route/redact decisions are exactly those of a chat request."""
        texts = _embedding_texts(ctx.body.get("input"))
        if texts is None:
            return
        as_chat = {"messages": [{"role": "user", "content": text} for text in texts]}
        verdict = await self._scan_input(ctx, as_chat)
        if verdict.redacted:
            redacted = [message["content"] for message in verdict.request["messages"]]
            single = isinstance(ctx.body.get("input"), str)
            ctx.body = {**ctx.body, "input": redacted[0] if single else redacted}
            ctx.raw = b""

    async def _scan_input(self, ctx: RequestContext, request: Mapping[str, Any]) -> ChatVerdict:
        """Scan, record, and apply the block and route verdicts; redaction is the caller's."""
        if len(ctx.raw) > _THREAD_ABOVE_BYTES:
            verdict = await asyncio.to_thread(
                self._guard.scan_chat, request, target="input", input_tokens=ctx.input_tokens
            )
        else:
            verdict = self._guard.scan_chat(request, target="input", input_tokens=ctx.input_tokens)
        self._record(ctx, verdict.findings)
        if verdict.blocked is not None:
            rule = verdict.blocked
            ctx.error_type = "guard_blocked"
            raise bad_request(
                f"The request was blocked by guardrail rule {rule.rule_id!r} "
                f"(category {rule.category!r}); remove the flagged content and retry",
                code="guard_blocked",
            )
        if verdict.route is not None:
            ctx.state[ROUTES] = [verdict.route]
        return verdict

    def check_output(self, ctx: RequestContext, text: str) -> str | None:
        if ctx.api not in _GUARDED_APIS:
            return None
        findings = self._guard.scan(text, target="output")
        self._record(ctx, findings)
        _refuse_blocked_output(ctx, findings)
        replacement = None
        if any(f.action == "redact" and not f.shadow for f in findings):
            replacement = self._guard.redact(text, target="output")
        schema = _requested_schema(ctx.body)
        if schema is not None:
            errors = _compiled(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)).errors(text)
            if errors:
                ctx.error_type = "output_schema_mismatch"
                raise RequestRefused(
                    502,
                    "The answer does not match the requested response_format json_schema: "
                    + "; ".join(errors[:3]),
                    type="api_error",
                    code="output_schema_mismatch",
                )
        return replacement

    def stream_checker(self, ctx: RequestContext) -> StreamChecker | None:
        if ctx.api not in _GUARDED_APIS:
            return None
        return _GuardedStream(self, ctx)

    def _record(self, ctx: RequestContext, findings: Iterable[Finding]) -> None:
        recorded = ctx.state.setdefault(FINDINGS, [])
        for finding in findings:
            action = "shadow" if finding.shadow else finding.action
            self.findings.labels(finding.rule_id, action).inc()
            recorded.append({"rule": finding.rule_id, "action": action})
        logger.debug("request %s: %d guardrail findings so far", ctx.request_id, len(recorded))


class _GuardedStream:
    """The output rules over one streamed answer, delta by delta.

    The engine's scanner holds back the tail of the text that a match may still
    continue into (at most ``GuardStream.holdback`` characters) and releases the rest
    with redactions applied; ``finish`` releases the held tail at the end of the text.
    A ``block`` finding ends the stream before any of the text it was found in leaves.
    """

    def __init__(self, owner: PolicyGuard, ctx: RequestContext) -> None:
        self._owner = owner
        self._ctx = ctx
        self._scanner = owner._guard.stream(target="output")

    def feed(self, delta: str) -> str:
        return self._released(*self._scanner.feed(delta))

    def finish(self) -> str:
        released = self._released(*self._scanner.finish())
        # A later text block (Anthropic streams may have several) starts a fresh scan.
        self._scanner = self._owner._guard.stream(target="output")
        return released

    def _released(self, text: str, findings: list[Finding]) -> str:
        if findings:
            self._owner._record(self._ctx, findings)
            _refuse_blocked_output(self._ctx, findings)
        return text


def _refuse_blocked_output(ctx: RequestContext, findings: Iterable[Finding]) -> None:
    blocked = next((f for f in findings if f.action == "block" and not f.shadow), None)
    if blocked is not None:
        ctx.error_type = "output_blocked"
        raise RequestRefused(
            502,
            f"The answer was withheld by guardrail rule {blocked.rule_id!r} "
            f"(category {blocked.category!r})",
            type="api_error",
            code="guard_output_blocked",
        )


def _embedding_texts(value: object) -> list[str] | None:
    """The texts of an embeddings ``input``; None for token ids, which hold no text."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return None


def _requested_schema(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The schema of ``response_format: {"type": "json_schema", "json_schema": {"schema"}}``."""
    response_format = body.get("response_format")
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    return schema if isinstance(schema, dict) else None


@functools.lru_cache(maxsize=256)
def _compiled(schema: bytes) -> JsonSchema:
    """Compiled schemas by their canonical JSON: clients resend the same few schemas."""
    return JsonSchema(orjson.loads(schema))
