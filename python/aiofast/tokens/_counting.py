"""Token counts of plain text, one string, many, or a stream of chunks."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from aiofast import _core
from aiofast.errors import InvalidInputError, NotFoundError
from aiofast.tokens._models import DEFAULT_ENCODING, ENCODINGS, encoding_for_model

__all__ = ["TokenCounter", "count_tokens", "count_tokens_batch", "resolve_encoding"]


def resolve_encoding(encoding: str | None, model: str | None) -> str:
    """The encoding named by exactly one of ``encoding`` or ``model`` (default o200k_base)."""
    if encoding is not None:
        if model is not None:
            raise InvalidInputError("pass either encoding= or model=, not both")
        if encoding not in ENCODINGS:
            raise NotFoundError(f"unknown encoding {encoding!r}; use one of {', '.join(ENCODINGS)}")
        return encoding
    if model is not None:
        return encoding_for_model(model).encoding
    return DEFAULT_ENCODING


def count_tokens(text: str, *, encoding: str | None = None, model: str | None = None) -> int:
    """The number of tokens in ``text``: exactly ``len(tiktoken_encoding.encode_ordinary(text))``.

    Special-token text such as ``<|endoftext|>`` counts as ordinary text. Lone surrogates
    are replaced the way tiktoken does. Without ``encoding`` or ``model``, o200k_base.
    """
    if encoding is None and model is None:
        return _core.count_tokens(text, DEFAULT_ENCODING)
    return _core.count_tokens(text, resolve_encoding(encoding, model))


def count_tokens_batch(
    texts: Sequence[str], *, encoding: str | None = None, model: str | None = None
) -> list[int]:
    """Token counts of many texts, without the GIL and on several threads for large batches."""
    return _core.count_tokens_batch(list(texts), resolve_encoding(encoding, model))


def _is_high_surrogate(char: str) -> bool:
    return "\ud800" <= char <= "\udbff"


class TokenCounter:
    """Counts a text that arrives in chunks, such as a streamed completion.

    ``total`` always equals :func:`count_tokens` of everything pushed so far, whatever
    the chunk boundaries. Safe to use from several threads.
    """

    def __init__(self, *, encoding: str | None = None, model: str | None = None) -> None:
        self._stream = _core.TokenStream(resolve_encoding(encoding, model))
        # A high surrogate at the end of a chunk may pair with a low one at the start of
        # the next, as it would in the concatenated string, so it waits for that chunk.
        self._held = ""
        self._lock = threading.Lock()

    @property
    def encoding(self) -> str:
        return self._stream.encoding

    def push(self, delta: str) -> None:
        """Adds a chunk of text."""
        with self._lock:
            if self._held:
                delta = self._held + delta
                self._held = ""
            if delta and _is_high_surrogate(delta[-1]):
                delta, self._held = delta[:-1], delta[-1]
            if delta:
                self._stream.push(delta)

    @property
    def total(self) -> int:
        """Tokens in everything pushed so far."""
        with self._lock:
            if self._held:
                return self._stream.total_with(self._held)
            return self._stream.total
