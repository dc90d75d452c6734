"""Where the shared data folder (corpora, wire payloads, prices) is, if present.

It sits beside the repository (``../shared/data``) on developer machines and in CI;
``AIOFAST_SHARED_DATA`` overrides that. Tests over the full corpora skip without it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parent.parent


def shared_data() -> Path | None:
    candidates = [os.environ.get("AIOFAST_SHARED_DATA", "")]
    candidates += [str(_REPO.parent / "shared" / "data"), "/work/shared/data"]
    for candidate in candidates:
        if candidate and Path(candidate, "README.md").is_file():
            return Path(candidate)
    return None


def require_shared_data(*parts: str) -> Path:
    """The path under the shared data folder, or skip the test saying why."""
    root = shared_data()
    if root is None or not root.joinpath(*parts).exists():
        pytest.skip(f"shared data {'/'.join(parts)} not found (set AIOFAST_SHARED_DATA)")
    return root.joinpath(*parts)
