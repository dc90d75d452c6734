"""Which encoding a model uses."""

from __future__ import annotations

import functools
from dataclasses import dataclass

__all__ = ["DEFAULT_ENCODING", "ENCODINGS", "ModelEncoding", "bare_model_id", "encoding_for_model"]

ENCODINGS: tuple[str, ...] = ("cl100k_base", "o200k_base")

#: The encoding assumed for a model that is not known (Claude, Llama, a new release):
#: the newest OpenAI encoding, with ``estimated=True`` on the result.
DEFAULT_ENCODING = "o200k_base"

# Model families, each matching its own name or the name followed by a separator
# ("gpt-4o", "gpt-4o-mini", "gpt-5.1"). Longer families are tried first, so "gpt-4o"
# wins over "gpt-4".
_FAMILIES: dict[str, str] = {
    "gpt-5": "o200k_base",
    "gpt-4.5": "o200k_base",
    "gpt-4.1": "o200k_base",
    "gpt-4o": "o200k_base",
    "chatgpt-4o": "o200k_base",
    "gpt-oss": "o200k_base",
    "o1": "o200k_base",
    "o3": "o200k_base",
    "o4": "o200k_base",
    "codex-mini": "o200k_base",
    "computer-use-preview": "o200k_base",
    "omni-moderation": "o200k_base",
    "gpt-4": "cl100k_base",
    "gpt-3.5-turbo": "cl100k_base",
    "gpt-3.5": "cl100k_base",
    "gpt-35-turbo": "cl100k_base",
    "text-embedding-3-small": "cl100k_base",
    "text-embedding-3-large": "cl100k_base",
    "text-embedding-ada-002": "cl100k_base",
    "davinci-002": "cl100k_base",
    "babbage-002": "cl100k_base",
}
_BY_LENGTH = sorted(_FAMILIES, key=len, reverse=True)
_SEPARATORS = frozenset("-.:@_")


@dataclass(frozen=True)
class ModelEncoding:
    """The encoding of a model; ``estimated`` is true when the model was not recognised."""

    encoding: str
    estimated: bool


def bare_model_id(model: str) -> str:
    """The model id without provider prefixes or fine-tune wrapping, lower-cased.

    ``openai/gpt-4o-2024-08-06`` and ``azure/gpt-4o`` give ``gpt-4o-2024-08-06`` and
    ``gpt-4o``; ``ft:gpt-4o-mini:org::id`` gives ``gpt-4o-mini``.
    """
    bare = model.strip().lower().rsplit("/", 1)[-1]
    if bare.startswith("ft:"):
        bare = bare[3:].split(":", 1)[0]
    return bare


def _family_encoding(bare: str) -> str | None:
    for family in _BY_LENGTH:
        if bare.startswith(family) and (
            len(bare) == len(family) or bare[len(family)] in _SEPARATORS
        ):
            return _FAMILIES[family]
    return None


@functools.lru_cache(maxsize=1024)
def encoding_for_model(model: str) -> ModelEncoding:
    """The encoding ``model`` uses; unknown models get :data:`DEFAULT_ENCODING`, estimated."""
    encoding = _family_encoding(bare_model_id(model))
    if encoding is None:
        return ModelEncoding(DEFAULT_ENCODING, estimated=True)
    return ModelEncoding(encoding, estimated=False)
