"""The policy: one validated TOML file that is the whole behaviour of aiofast.

Every section is optional with a safe default, and every value is checked at load time
by strict pydantic models, so a typo fails the start with a message naming the key
(``upstreams.0.timeouts.connect: Input should be greater than 0``) instead of surfacing
as a wrong decision later.

Sections owned by other parts of aiofast (``guard``, ``limits``, ``routes``,
``experiments``) are added as one field each on :class:`Policy`, with their model
defined in their own module, so this file stays the index of the policy's shape.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from aiofast.cache import CacheSettings
from aiofast.errors import ConfigError
from aiofast.guard_policy import GuardSettings
from aiofast.limits.config import LimitConfig, LimiterSettings
from aiofast.routing.policy import RoutingSettings
from aiofast.routing.spec import ExperimentSpec, RuleSpec
from aiofast.stores.settings import RedisSettings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

__all__ = [
    "AdminKeyPolicy",
    "DeploymentPolicy",
    "KeyPolicy",
    "LedgerPolicy",
    "LoggingPolicy",
    "Policy",
    "ServerPolicy",
    "SimulatedFaults",
    "SimulatedSettings",
    "Timeouts",
    "UpstreamPolicy",
    "default_policy",
    "load_policy",
]


class _Strict(BaseModel):
    """Base of every policy model: no unknown keys, no silent type coercion, frozen."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Timeouts(_Strict):
    """Seconds allowed for each phase of an upstream call."""

    connect: float = Field(default=5.0, gt=0)
    # Until the response headers and then between two reads of the body: a stream
    # that goes silent for longer than this is treated as dead.
    first_byte: float = Field(default=60.0, gt=0)
    total: float = Field(default=600.0, gt=0)


FaultKind = Literal["429", "500", "529", "hang", "cut"]


class SimulatedFaults(_Strict):
    """Fault injection of the simulated provider."""

    error_rate: float = Field(default=0.0, ge=0, le=1)
    kinds: tuple[FaultKind, ...] = ("500",)
    retry_after: float = Field(default=1.0, ge=0)
    hang_seconds: float = Field(default=3600.0, gt=0)
    cut_after_chunks: int = Field(default=3, ge=0)


class SimulatedSettings(_Strict):
    """Behaviour of the simulated provider: timing, reply length and faults."""

    ttft_ms: float = Field(default=120.0, ge=0)
    inter_token_ms: float = Field(default=8.0, ge=0)
    min_output_tokens: int = Field(default=16, ge=1)
    max_output_tokens: int = Field(default=256, ge=1)
    embedding_dimensions: int = Field(default=64, ge=1)
    faults: SimulatedFaults = SimulatedFaults()

    @model_validator(mode="after")
    def _lengths_ordered(self) -> SimulatedSettings:
        if self.min_output_tokens > self.max_output_tokens:
            raise ValueError(
                f"min_output_tokens ({self.min_output_tokens}) must not exceed "
                f"max_output_tokens ({self.max_output_tokens})"
            )
        return self


UpstreamKind = Literal["openai", "anthropic", "simulated"]


class UpstreamPolicy(_Strict):
    """A provider endpoint. Secrets are read from the environment variable it names."""

    name: str = Field(min_length=1)
    kind: UpstreamKind
    base_url: str | None = None
    api_key_env: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeouts: Timeouts = Timeouts()
    simulated: SimulatedSettings = SimulatedSettings()

    @model_validator(mode="after")
    def _url_matches_kind(self) -> UpstreamPolicy:
        if self.kind == "simulated":
            if self.base_url is not None:
                raise ValueError("base_url is not used by kind = 'simulated'; remove it")
        elif self.base_url is None:
            raise ValueError(f"base_url is required for kind = '{self.kind}'")
        elif not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        return self

    def api_key(self) -> str | None:
        """The secret from the environment, or None when the upstream needs none."""
        if self.api_key_env is None:
            return None
        value = os.environ.get(self.api_key_env)
        if not value:
            raise ConfigError(
                f"upstream {self.name!r}: environment variable {self.api_key_env} "
                "(upstreams.api_key_env) is not set; export it or remove api_key_env"
            )
        return value


class DeploymentPolicy(_Strict):
    """One model served by one upstream; tiers are ordered lists of deployments."""

    name: str = Field(min_length=1)
    upstream: str
    model: str = Field(min_length=1)
    # The price-table entry to charge; defaults to the model the upstream reports.
    price_as: str | None = None
    weight: float = Field(default=1.0, gt=0)


class KeyPolicy(_Strict):
    """A virtual API key, stored as the sha256 digest of the bearer secret."""

    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    name: str = ""
    user: str = ""
    team: str = ""
    labels: dict[str, str] = Field(default_factory=dict)


class AdminKeyPolicy(_Strict):
    """A key for the admin routes (usage, outcomes)."""

    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    name: str = ""


class LedgerPolicy(_Strict):
    """Where usage events go. ``path = ""`` keeps them in memory only (tests, demos)."""

    path: str = "aiofast-usage.sqlite"
    batch_size: int = Field(default=512, ge=1)
    flush_interval: float = Field(default=0.25, gt=0)


class LoggingPolicy(_Strict):
    """The per-request JSON log line; bodies are left out unless asked for."""

    bodies: Literal["off", "hashed", "redacted", "full"] = "off"


OpenRoute = Literal["health", "metrics"]


class ServerPolicy(_Strict):
    """HTTP-level settings of the gateway."""

    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # Admin routes that answer without an admin key; nothing else can be opened.
    open_routes: tuple[OpenRoute, ...] = ("health",)
    default_tier: str | None = None


_Named = TypeVar("_Named", UpstreamPolicy, DeploymentPolicy)


class Policy(_Strict):
    """The whole policy. Build it with :func:`load_policy` or :func:`default_policy`."""

    version: str = Field(default="unversioned", min_length=1)
    upstreams: tuple[UpstreamPolicy, ...] = ()
    deployments: tuple[DeploymentPolicy, ...] = ()
    tiers: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    keys: tuple[KeyPolicy, ...] = ()
    admin_keys: tuple[AdminKeyPolicy, ...] = ()
    ledger: LedgerPolicy = LedgerPolicy()
    logging: LoggingPolicy = LoggingPolicy()
    server: ServerPolicy = ServerPolicy()
    # Shared state of several gateway processes (aiofast.stores); None keeps it in process.
    redis: RedisSettings | None = None
    cache: CacheSettings = CacheSettings()
    # Rules, experiments, breakers, retries and fallbacks (aiofast.routing).
    routes: tuple[RuleSpec, ...] = ()
    experiments: tuple[ExperimentSpec, ...] = ()
    routing: RoutingSettings = RoutingSettings()
    # Rate, token, concurrency and spend limits (aiofast.limits).
    limits: tuple[LimitConfig, ...] = ()
    limiter: LimiterSettings = LimiterSettings()
    # Guardrails on prompts and answers (aiofast.guard_stage); absent means none run.
    guard: GuardSettings | None = None

    @model_validator(mode="after")
    def _references_resolve(self) -> Policy:
        upstreams = _unique("upstreams", [u.name for u in self.upstreams])
        deployments = _unique("deployments", [d.name for d in self.deployments])
        for i, deployment in enumerate(self.deployments):
            if deployment.upstream not in upstreams:
                raise ValueError(
                    f"deployments.{i}.upstream: unknown upstream {deployment.upstream!r}; "
                    f"known: {sorted(upstreams)}"
                )
        for tier, members in self.tiers.items():
            if not members:
                raise ValueError(f"tiers.{tier}: a tier needs at least one deployment")
            for member in members:
                if member not in deployments:
                    raise ValueError(
                        f"tiers.{tier}: unknown deployment {member!r}; known: {sorted(deployments)}"
                    )
        _unique("limits", [limit.display_name for limit in self.limits])
        for i, limit in enumerate(self.limits):
            if limit.downgrade_to is not None and limit.downgrade_to not in self.tiers:
                raise ValueError(
                    f"limits.{i}.downgrade_to: unknown tier {limit.downgrade_to!r}; "
                    f"known: {sorted(self.tiers)}"
                )
        if self.guard is not None:
            for rule_id, tier in self.guard.route_tiers().items():
                if tier not in self.tiers:
                    raise ValueError(
                        f"guard: rule {rule_id!r} routes to unknown tier {tier!r}; "
                        f"known: {sorted(self.tiers)}"
                    )
        default = self.server.default_tier
        if default is not None and default not in self.tiers:
            raise ValueError(
                f"server.default_tier: unknown tier {default!r}; known: {sorted(self.tiers)}"
            )
        return self

    @property
    def auth_required(self) -> bool:
        """Whether clients must present a virtual key."""
        return bool(self.keys)

    def upstream(self, name: str) -> UpstreamPolicy:
        return self._by_name("upstreams", self.upstreams)[name]

    def deployment(self, name: str) -> DeploymentPolicy:
        return self._by_name("deployments", self.deployments)[name]

    def _by_name(self, section: str, items: tuple[_Named, ...]) -> dict[str, _Named]:
        """A section's entries by name, built on first use: every request looks up its
        deployment and upstream several times. Kept in the instance dict, not as a field
        (equality and dumps ignore it), next to the tuple it was built from, so a
        ``model_copy`` that replaces the section gets a fresh index."""
        key = "_index_" + section
        cached = self.__dict__.get(key)
        if cached is None or cached[0] is not items:
            cached = (items, {item.name: item for item in items})
            self.__dict__[key] = cached
        index: dict[str, _Named] = cached[1]
        return index


def _unique(section: str, names: list[str]) -> set[str]:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{section}: the name {name!r} is used twice")
        seen.add(name)
    return seen


def policy_from_mapping(data: Mapping[str, Any], *, source: str = "policy") -> Policy:
    """Validate a parsed policy; errors name every failing key."""
    try:
        # Validating the JSON form keeps strict typing while TOML arrays fill tuples.
        return Policy.model_validate_json(orjson.dumps(dict(data)))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read and validate a policy TOML file."""
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"policy file {str(file)!r} does not exist (--config)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"policy file {str(file)!r} is not valid TOML: {exc}") from None
    return policy_from_mapping(data, source=str(file))


def _describe(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid policy"]
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key; check its spelling and section"
        lines.append(f"  {key}: {message}")
    return "\n".join(lines)


# The embedded default: three tiers on the simulated provider, priced as real models
# so that cost figures look like production ones.
DEFAULT_POLICY_TOML = """
version = "embedded-default"

[[upstreams]]
name = "simulated"
kind = "simulated"

[[deployments]]
name = "small"
upstream = "simulated"
model = "gpt-4o-mini"

[[deployments]]
name = "medium"
upstream = "simulated"
model = "gpt-4o"

[[deployments]]
name = "large"
upstream = "simulated"
model = "o3"

[tiers]
small = ["small"]
medium = ["medium"]
large = ["large"]

[server]
default_tier = "small"
open_routes = ["health", "metrics"]

# The built-in packs: personal data and secrets redacted, injection attempts flagged.
[guard]
"""


def default_policy() -> Policy:
    """The embedded policy ``aiofast serve`` uses without ``--config``."""
    return policy_from_mapping(tomllib.loads(DEFAULT_POLICY_TOML), source="embedded default")
