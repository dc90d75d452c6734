"""Guardrails: rule-based checks of prompts and outputs, compiled once, run in Rust.

>>> guard = Guard()                       # the default packs: pii, secrets, injection, invisible
>>> guard.redact("mail ada@example.org")
'mail [EMAIL]'

Offsets in findings are character offsets (code points) into the text that was
scanned, so ``text[f.start:f.end]`` is the matched span. Findings never hold the
matched text itself, so logging a finding cannot leak a secret.

A rule set is plain data (the ``[guard]`` section of a policy, or a dict)::

    {"packs": ["pii", "secrets"],
     "rules": [{"id": "no-acme", "kind": "literal", "words": ["acme corp"], "action": "block"}],
     "overrides": {"pii.phone": {"enabled": False}, "secret.generic": {"shadow": True}}}
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from aiofast._core import _Guard, _GuardStream, _JsonSchema, guard_packs
from aiofast.errors import ConfigError, InvalidInputError

__all__ = [
    "DEFAULT_PACKS",
    "ChatFinding",
    "ChatVerdict",
    "Finding",
    "Guard",
    "GuardStream",
    "JsonSchema",
    "RuleInfo",
]

Action = Literal["block", "redact", "flag", "route"]
Target = Literal["input", "output"]

DEFAULT_PACKS: tuple[str, ...] = tuple(guard_packs())


@dataclass(frozen=True)
class RuleInfo:
    """A compiled rule as the engine runs it (after packs and overrides)."""

    id: str
    category: str
    severity: str
    action: Action
    tier: str | None
    shadow: bool
    placeholder: str


@dataclass(frozen=True)
class Finding:
    """One match: which rule, where (character offsets), how sure. Never the text."""

    rule_id: str
    category: str
    severity: str
    action: Action
    start: int
    end: int
    score: float
    label: str
    shadow: bool = False
    tier: str | None = None


@dataclass(frozen=True)
class ChatFinding(Finding):
    """A finding inside a chat request: ``path`` is a JSON pointer to the string."""

    path: str = ""
    role: str | None = None


@dataclass(frozen=True)
class ChatVerdict:
    """What the rules decided about a whole request or response.

    ``blocked`` is the finding that refuses it (shadow rules never block), ``route``
    the tier a ``route`` rule asks for, ``request`` the request with redactions
    applied (the original object when nothing was redacted). The redaction mapping
    itself is never kept.
    """

    findings: tuple[ChatFinding, ...]
    blocked: ChatFinding | None
    route: str | None
    request: Mapping[str, Any]
    redacted: bool

    @property
    def flags(self) -> tuple[ChatFinding, ...]:
        """Findings that are only recorded: ``flag`` rules and every shadow finding."""
        return tuple(f for f in self.findings if f.action == "flag" or f.shadow)

    @property
    def redactions(self) -> tuple[ChatFinding, ...]:
        """Redactions that were applied to ``request``."""
        return tuple(f for f in self.findings if f.action == "redact" and not f.shadow)


def _spec(
    spec: Mapping[str, Any] | None,
    packs: Iterable[str] | None,
    rules: Sequence[Mapping[str, Any]] | None,
    overrides: Mapping[str, Mapping[str, Any]] | None,
) -> str:
    merged: dict[str, Any] = dict(spec or {})
    if packs is not None:
        merged["packs"] = list(packs)
    if rules is not None:
        merged["rules"] = list(rules)
    if overrides is not None:
        merged["overrides"] = dict(overrides)
    if spec is None and packs is None and rules is None:
        merged.setdefault("packs", list(DEFAULT_PACKS))
    try:
        return json.dumps(merged)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"guard rules must be JSON-compatible data: {exc}") from exc


class Guard:
    """A compiled rule set. Thread-safe; scanning releases the GIL.

    ``Guard()`` runs the default packs. ``Guard(spec)`` takes a whole rule set
    (``packs``, ``rules``, ``overrides``, ``decode_blobs``); the keyword arguments
    replace the matching keys of ``spec``.
    """

    def __init__(
        self,
        spec: Mapping[str, Any] | None = None,
        *,
        packs: Iterable[str] | None = None,
        rules: Sequence[Mapping[str, Any]] | None = None,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self._native = _Guard(_spec(spec, packs, rules, overrides))
        self.rules: tuple[RuleInfo, ...] = tuple(
            RuleInfo(i, c, s, a, t, sh, p)  # type: ignore[arg-type]
            for i, c, s, a, t, sh, p in self._native.rules()
        )

    def __repr__(self) -> str:
        return f"Guard({len(self.rules)} rules)"

    def _finding(self, raw: tuple[int, int, int, float, str]) -> Finding:
        index, start, end, score, label = raw
        r = self.rules[index]
        return Finding(
            r.id, r.category, r.severity, r.action, start, end, score, label, r.shadow, r.tier
        )

    def scan(
        self, text: str, *, target: Target | None = None, role: str | None = None
    ) -> list[Finding]:
        """Every finding in ``text``. Without ``target``/``role`` every rule runs."""
        return [self._finding(f) for f in self._native.scan(text, target, role)]

    def redact(self, text: str, *, target: Target | None = None, role: str | None = None) -> str:
        """``text`` with the spans of ``redact`` rules replaced by typed placeholders."""
        return self._native.redact(text, target, role)

    def scan_chat(
        self,
        request: Mapping[str, Any],
        *,
        target: Target = "input",
        input_tokens: int | None = None,
    ) -> ChatVerdict:
        """Scans every message part, tool result and tool-call argument of a chat
        request (or, with ``target="output"``, a response) with each part's role."""
        try:
            body = orjson.dumps(request).decode()
        except (TypeError, orjson.JSONEncodeError) as exc:
            raise InvalidInputError(f"request: cannot be read as JSON: {exc}") from exc
        raw, blocked, route, redacted = self._native.scan_chat(body, target, input_tokens)
        findings = tuple(self._chat_finding(f) for f in raw)
        return ChatVerdict(
            findings=findings,
            blocked=findings[blocked] if blocked is not None else None,
            route=route,
            request=orjson.loads(redacted) if redacted is not None else request,
            redacted=redacted is not None,
        )

    def _chat_finding(self, raw: tuple[int, int, int, float, str, str, str | None]) -> ChatFinding:
        index, start, end, score, label, path, role = raw
        r = self.rules[index]
        return ChatFinding(
            r.id, r.category, r.severity, r.action, start, end, score, label, r.shadow, r.tier,
            path, role,
        )  # fmt: skip

    def stream(self, *, target: Target | None = None, role: str | None = None) -> GuardStream:
        """A scanner for streamed text; see :class:`GuardStream`."""
        return GuardStream(self, self._native.stream(target, role))


class GuardStream:
    """Incremental scanner: ``feed(delta)`` returns the text that is safe to forward
    (redactions applied) and new findings; ``finish()`` releases the rest.

    It holds back at most ``holdback`` characters, the longest match the rules can
    make, so a match split across deltas is still found. Findings over any chunking
    equal the findings over the whole text; offsets count from the stream's start.
    """

    def __init__(self, guard: Guard, native: _GuardStream) -> None:
        self._guard = guard
        self._native = native

    @property
    def holdback(self) -> int:
        return self._native.holdback

    def feed(self, delta: str) -> tuple[str, list[Finding]]:
        text, raw = self._native.feed(delta)
        return text, [self._guard._finding(f) for f in raw]

    def finish(self) -> tuple[str, list[Finding]]:
        text, raw = self._native.finish()
        return text, [self._guard._finding(f) for f in raw]


class JsonSchema:
    """A compiled JSON schema for output constraints (``response_format: json_schema``)."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        try:
            text = json.dumps(schema)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"schema: must be JSON-compatible data: {exc}") from exc
        self._native = _JsonSchema(text)

    def errors(self, output: str) -> list[str]:
        """Why ``output`` is not JSON matching the schema; empty when it is.
        Messages name locations and constraints, never the output's values."""
        return self._native.check(output)
