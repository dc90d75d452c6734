"""Exact token counts for OpenAI's encodings, and what a chat request will be billed.

Counts equal ``len(tiktoken.get_encoding(name).encode_ordinary(text))`` for
``cl100k_base`` and ``o200k_base``; the rank files are embedded and checked, nothing is
downloaded. One documented difference: tiktoken's o200k_base fails on 999,999 or more
consecutive whitespace characters; here such text is split exactly as the pattern
defines (as tiktoken does for shorter runs), so every string has a count.
"""

from __future__ import annotations

from aiofast.tokens._chat import ChatTokens, count_chat
from aiofast.tokens._counting import TokenCounter, count_tokens, count_tokens_batch
from aiofast.tokens._models import DEFAULT_ENCODING, ENCODINGS, ModelEncoding, encoding_for_model

__all__ = [
    "DEFAULT_ENCODING",
    "ENCODINGS",
    "ChatTokens",
    "ModelEncoding",
    "TokenCounter",
    "count_chat",
    "count_tokens",
    "count_tokens_batch",
    "encoding_for_model",
]
