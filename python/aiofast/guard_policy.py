"""The ``[guard]`` policy section: which guardrails run in the gateway.

A policy without ``[guard]`` runs none. With the section, ``enabled`` defaults to true
and ``packs`` to every built-in pack, so ``[guard]`` alone turns the defaults on::

    [guard]
    packs = ["pii", "secrets"]
    rules = [{ id = "no-acme", kind = "literal", words = ["acme corp"], action = "block" }]

    [guard.overrides."pii.phone"]
    enabled = false

    [guard.overrides."secret.generic"]
    action = "block"
    shadow = true          # record what it would do, change nothing

The rules themselves are checked by the engine when the policy loads (compiling the
rule set), so a bad regex or an unknown rule key fails the start with its key named.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from aiofast.errors import ConfigError
from aiofast.guard import DEFAULT_PACKS, Guard

__all__ = ["GuardOverride", "GuardSettings"]

GuardAction = Literal["block", "redact", "flag", "route"]


class GuardOverride(BaseModel):
    """Changes to one rule of a pack, by rule id (``pii.phone``)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    enabled: bool | None = None
    action: GuardAction | None = None
    shadow: bool | None = None
    # The tier a ``route`` action sends the request to.
    tier: str | None = Field(default=None, min_length=1)


class GuardSettings(BaseModel):
    """The ``[guard]`` section: packs, extra rules and per-rule overrides."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    enabled: bool = True
    packs: tuple[str, ...] = DEFAULT_PACKS
    # Rule specs as the engine reads them (id, kind, action, ...); validated by compiling.
    rules: tuple[dict[str, Any], ...] = ()
    overrides: dict[str, GuardOverride] = Field(default_factory=dict)
    # Also scan text decoded from base64 and hex blobs.
    decode_blobs: bool = True

    @model_validator(mode="after")
    def _rules_compile(self) -> GuardSettings:
        if self.enabled:
            try:
                self.compile()
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return self

    def spec(self) -> dict[str, Any]:
        """The rule set as the engine takes it."""
        return {
            "packs": list(self.packs),
            "rules": [dict(rule) for rule in self.rules],
            "overrides": {
                rule_id: override.model_dump(exclude_none=True)
                for rule_id, override in self.overrides.items()
            },
            "decode_blobs": self.decode_blobs,
        }

    def compile(self) -> Guard:
        return Guard(self.spec())

    def route_tiers(self) -> dict[str, str]:
        """The tier each active ``route`` rule sends requests to, by rule id."""
        if not self.enabled:
            return {}
        return {
            rule.id: rule.tier
            for rule in self.compile().rules
            if rule.action == "route" and rule.tier is not None and not rule.shadow
        }
