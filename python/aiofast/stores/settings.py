"""The ``[redis]`` section of a policy: where the shared state lives and what to do without it.

```toml
[redis]
url_env = "AIOFAST_REDIS_URL"   # redis://[user:password@]host:port/db, or rediss:// for TLS
namespace = "aiofast"           # hash tag of every key: one slot per admission, Cluster-safe
cluster = false                 # true: the URL names one node of a Redis Cluster
timeout_ms = 250                # bound on every Redis command (connect: connect_timeout_ms)
instances = 4                   # gateway processes sharing Redis (for the `local` fallback)

[redis.on_failure]              # fail_open | fail_closed | local, per feature
requests = "local"
budgets = "fail_closed"
```

The URL itself (it may carry a password) is never in the policy file, only the name
of the environment variable that holds it.
"""

from __future__ import annotations

import os
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from aiofast.errors import ConfigError

__all__ = ["FailureMode", "FailurePolicy", "RedisSettings"]

FailureMode = Literal["fail_open", "fail_closed", "local"]
"""What a feature does while Redis cannot be reached.

- ``fail_open``: skip the check, admit.
- ``fail_closed``: refuse (503) rather than risk going over.
- ``local``: decide in this process, each scope's limit divided by ``instances``.
"""

_NAMESPACE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class FailurePolicy(BaseModel):
    """Failure mode per feature. Limits default to ``local``: degrade, never crash,
    and never let N instances each spend the whole budget."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests: FailureMode = "local"
    tokens: FailureMode = "local"
    concurrency: FailureMode = "local"
    budgets: FailureMode = "local"
    breakers: Literal["fail_open", "local"] = "local"
    experiments: Literal["fail_open", "local"] = "local"


class RedisSettings(BaseModel):
    """Validated ``[redis]`` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url_env: str = "AIOFAST_REDIS_URL"
    namespace: str = "aiofast"
    cluster: bool = False
    timeout_ms: float = Field(default=250.0, gt=0, le=10_000)
    connect_timeout_ms: float = Field(default=250.0, gt=0, le=10_000)
    max_connections: int = Field(default=64, ge=1, le=10_000)
    probe_interval_ms: float = Field(default=500.0, gt=0, le=60_000)
    instances: int = Field(default=1, ge=1, le=10_000)
    on_failure: FailurePolicy = FailurePolicy()

    @field_validator("namespace")
    @classmethod
    def _namespace_is_a_plain_tag(cls, value: str) -> str:
        if not _NAMESPACE.match(value):
            raise ValueError(
                "redis.namespace must be 1-64 characters of letters, digits, '_', '.', ':' "
                f"or '-' (it becomes the {{hash tag}} of every key), got {value!r}"
            )
        return value

    @property
    def timeout_s(self) -> float:
        return self.timeout_ms / 1000

    @property
    def connect_timeout_s(self) -> float:
        return self.connect_timeout_ms / 1000

    @property
    def bound_s(self) -> float:
        """The longest one Redis call may take: connecting plus one command."""
        return self.connect_timeout_s + self.timeout_s

    def url(self) -> str:
        """The Redis URL from the environment variable named by ``url_env``."""
        url = os.environ.get(self.url_env, "").strip()
        if not url:
            raise ConfigError(
                f"redis.url_env names the environment variable {self.url_env!r}, which is "
                "not set; set it to redis://[user:password@]host:port/db (rediss:// for TLS) "
                "or remove the [redis] section to keep limits in this process"
            )
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(
                f"the environment variable {self.url_env!r} (redis.url_env) must hold a "
                "redis://, rediss:// or unix:// URL"
            )
        return url
