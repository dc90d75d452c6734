"""Virtual API keys: bearer secrets known only by their sha256 digest.

The policy stores ``digest = "sha256:<hex>"``; a presented key is hashed and compared
against every known digest with :func:`hmac.compare_digest`, so neither the file nor
the comparison timing reveals a key. ``aiofast keygen`` makes a key and its digest.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from aiofast.policy import AdminKeyPolicy, KeyPolicy

__all__ = ["Identity", "KeyRing", "digest", "extract_key", "new_key"]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling, as far as limits, costs and the ledger are concerned."""

    key: str = ""
    user: str = ""
    team: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)


ANONYMOUS = Identity()


def digest(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def new_key() -> str:
    return "sk-aiofast-" + secrets.token_urlsafe(32)


def extract_key(headers: Mapping[str, str]) -> str | None:
    """The presented key: ``Authorization: Bearer`` (OpenAI) or ``x-api-key`` (Anthropic)."""
    authorization = headers.get("Authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return headers.get("x-api-key") or None


class KeyRing:
    """Identities by digest; lookups compare against every digest in constant time."""

    def __init__(self, keys: Iterable[KeyPolicy | AdminKeyPolicy]) -> None:
        self._entries: list[tuple[bytes, Identity]] = []
        for index, key in enumerate(keys):
            user = key.user if isinstance(key, KeyPolicy) else ""
            team = key.team if isinstance(key, KeyPolicy) else ""
            labels = key.labels if isinstance(key, KeyPolicy) else {}
            name = key.name or f"key-{index}"
            self._entries.append((key.digest.encode(), Identity(name, user, team, labels)))

    def __bool__(self) -> bool:
        return bool(self._entries)

    def identify(self, secret: str | None) -> Identity | None:
        if secret is None:
            return None
        presented = digest(secret).encode()
        found: Identity | None = None
        # No early exit: the time taken does not depend on which entry matched.
        for stored, identity in self._entries:
            if hmac.compare_digest(stored, presented):
                found = identity
        return found
