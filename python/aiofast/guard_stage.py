"""The guardrails in the request pipeline: the ``guard input`` stage.

:class:`PolicyGuard` runs the ``[guard]`` rule set of the policy over every chat and
messages request before it is admitted. What each action does here:

- ``block``: the request is refused with a 400 in the API's error format naming the
  rule id and category; the matched text is never echoed.
- ``redact``: the body is rewritten with typed placeholders (``[EMAIL]``) before it
  leaves for the provider; the mapping back to the original text is never kept.
- ``flag``: recorded only, in ``aiofast_guard_findings_total`` and the request log.
- ``route``: the tier the rule names goes to ``ctx.state["guard.routes"]``, which
  routing rules match with ``guard_route_in``.
- shadow rules (any action with ``shadow = true``): recorded with action ``shadow``,
  nothing else happens.

Every finding is counted under ``{rule, action}`` and listed (rule id and action, never
text) in ``ctx.state["guard.findings"]``, which the request log line carries.
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import Counter

from aiofast.context import RequestContext
from aiofast.guard import ChatFinding
from aiofast.guard_policy import GuardSettings
from aiofast.parsing import API_CHAT, API_MESSAGES
from aiofast.refusals import bad_request

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
        if ctx.api not in _GUARDED_APIS:
            return
        if len(ctx.raw) > _THREAD_ABOVE_BYTES:
            verdict = await asyncio.to_thread(
                self._guard.scan_chat, ctx.body, target="input", input_tokens=ctx.input_tokens
            )
        else:
            verdict = self._guard.scan_chat(ctx.body, target="input", input_tokens=ctx.input_tokens)
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
        if verdict.redacted:
            ctx.body = dict(verdict.request)
            # An empty raw body makes the pipeline serialise the redacted one.
            ctx.raw = b""

    def _record(self, ctx: RequestContext, findings: tuple[ChatFinding, ...]) -> None:
        if not findings:
            return
        recorded = ctx.state.setdefault(FINDINGS, [])
        for finding in findings:
            action = "shadow" if finding.shadow else finding.action
            self.findings.labels(finding.rule_id, action).inc()
            recorded.append({"rule": finding.rule_id, "action": action})
        logger.debug("request %s: %d guardrail findings", ctx.request_id, len(findings))
