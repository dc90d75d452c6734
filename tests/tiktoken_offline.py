"""tiktoken without network: its cache directory is filled from aiofast's embedded ranks.

tiktoken names a cached rank file by the sha1 of its download URL and checks the
content against the published sha256, so a cache laid out here is used as-is and the
reference encoding is tiktoken's own (its pattern and special tokens, not a copy).
Shared by the tests and benches/tokens.py.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent.parent / "crates" / "core" / "data"
URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"


def _fill_cache(cache: Path) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    for name in ("cl100k_base", "o200k_base"):
        target = cache / hashlib.sha1(URL.format(name=name).encode()).hexdigest()
        if not target.exists():
            partial = target.with_suffix(f".{os.getpid()}.tmp")
            partial.write_bytes(gzip.decompress((DATA / f"{name}.tiktoken.gz").read_bytes()))
            partial.replace(target)


def get_encoding(name: str) -> Any:
    """tiktoken's encoding `name`, loaded from the embedded rank files."""
    cache = Path(tempfile.gettempdir()) / "aiofast-tiktoken-cache"
    _fill_cache(cache)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    import tiktoken

    return tiktoken.get_encoding(name)
