"""Token counts: parity with tiktoken, worst cases, threads, streaming."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aiofast
from aiofast import NotFoundError, TokenCounter, count_tokens, count_tokens_batch
from aiofast.errors import InvalidInputError
from shared_data import require_shared_data
from tiktoken_offline import get_encoding

ENCODINGS = ("cl100k_base", "o200k_base")
FIXTURE = Path(__file__).parent / "fixtures" / "tokens" / "texts.json"


@pytest.fixture(scope="module", params=ENCODINGS)
def encoding(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def reference(encoding: str, text: str) -> int:
    return len(get_encoding(encoding).encode_ordinary(text))


def test_committed_fixture_counts(encoding: str) -> None:
    for entry in json.loads(FIXTURE.read_text(encoding="utf-8")):
        assert count_tokens(entry["text"], encoding=encoding) == entry[encoding], entry["text"]


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _corpus_texts() -> list[str]:
    root = require_shared_data("prompts")
    texts = []
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        raw = path.read_text(encoding="utf-8", errors="replace")
        texts.append(raw)
        if path.suffix == ".json":
            texts.extend(_strings(json.loads(raw)))
        elif path.suffix == ".jsonl":
            for line in raw.splitlines():
                if line.strip():
                    texts.extend(_strings(json.loads(line)))
    return texts


def test_parity_on_every_prompt_corpus_text(encoding: str) -> None:
    texts = _corpus_texts()
    ours = count_tokens_batch(texts, encoding=encoding)
    theirs = [len(ids) for ids in get_encoding(encoding).encode_ordinary_batch(texts)]
    mismatches = [t[:80] for t, a, b in zip(texts, ours, theirs, strict=True) if a != b]
    assert not mismatches, mismatches[:5]
    assert len(texts) > 10_000


SPECIALS = ["<|endoftext|>", "<|fim_prefix|>", "<|endofprompt|>", "<|im_start|>", "<|im_end|>"]
WHITESPACE = " \t\n\r\x0b\x0c\u00a0\u1680\u2000\u2028\u2029\u3000"
any_char = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=[])
texts = st.one_of(
    st.text(),
    st.text(alphabet=any_char),
    st.text(alphabet=WHITESPACE + "ab1.'\u0301"),
    st.text(alphabet="0123456789٣٤ .,-"),
    st.lists(st.sampled_from([*SPECIALS, " ", "x", "\n", "'s", "'LL"])).map("".join),
    st.builds(lambda c, n: c * n, any_char, st.integers(1, 2_000)),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC", min_size=100, max_size=1_500),
    st.text(alphabet="aeiouéà中文\u0301ǅ", min_size=500, max_size=1_000),
    st.text(alphabet=st.characters(categories=["Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Nd", "Po"])),
)


@settings(max_examples=300, deadline=None)
@given(text=texts)
def test_equals_tiktoken_on_generated_text(text: str) -> None:
    for encoding in ENCODINGS:
        assert count_tokens(text, encoding=encoding) == reference(encoding, text)


@pytest.mark.parametrize(
    "text", ["a\ud800b", "\ud83d\ude00", "\udfff", "x\ud83d", "\ud800\ud800\udc00"]
)
def test_surrogates_are_handled_like_tiktoken(encoding: str, text: str) -> None:
    assert count_tokens(text, encoding=encoding) == reference(encoding, text)


def test_special_token_text_is_ordinary_text() -> None:
    assert count_tokens("<|endoftext|>", encoding="cl100k_base") == 7
    assert count_tokens("<|endoftext|>", encoding="o200k_base") == reference(
        "o200k_base", "<|endoftext|>"
    )


def test_model_and_default_encoding() -> None:
    text = "hello world, it's a test"
    assert count_tokens(text, model="gpt-4") == reference("cl100k_base", text)
    assert count_tokens(text, model="openai/gpt-4o") == reference("o200k_base", text)
    assert count_tokens(text) == reference("o200k_base", text)


def test_bad_arguments_name_the_argument() -> None:
    with pytest.raises(NotFoundError, match="unknown encoding 'p50k_base'"):
        count_tokens("x", encoding="p50k_base")
    with pytest.raises(InvalidInputError, match="encoding= or model="):
        count_tokens("x", encoding="cl100k_base", model="gpt-4")


LETTERS = "abcdefghijklmnopqrstuvwxyz"
WORST_CASES = {
    "one char 1 MB": "a" * 1_000_000,
    "caret 1 MB": "^" * 1_000_000,
    "random letters 1 MB": "".join(
        random.Random(1).choices("abcdefghijklmnopqrstuvwxyz", k=1_000_000)
    ),
    "spaces 999,998": " " * 999_998,
    "digits 1 MB": "7" * 1_000_000,
}


@pytest.mark.parametrize("name", WORST_CASES)
def test_worst_cases_equal_tiktoken(encoding: str, name: str) -> None:
    text = WORST_CASES[name]
    assert count_tokens(text, encoding=encoding) == reference(encoding, text)


def test_a_million_spaces_have_a_count_where_tiktoken_fails() -> None:
    # tiktoken's o200k regex overflows its stack at 999,999 whitespace characters. The
    # pattern makes one piece of a whitespace run that ends the text, as it does for the
    # 999,998 spaces tiktoken can still count; BPE of that piece gives 7,813 tokens.
    assert count_tokens(" " * 1_000_000, encoding="o200k_base") == 7_813
    assert count_tokens(" " * 1_000_000, encoding="cl100k_base") == reference(
        "cl100k_base", " " * 1_000_000
    )
    assert count_tokens("\t " * 500_000, encoding="o200k_base") > 0


def test_batch_equals_single_counts_and_runs_threads(encoding: str) -> None:
    entries = json.loads(FIXTURE.read_text(encoding="utf-8"))
    batch = [e["text"] for e in entries] * 200  # over 1 MB: the batch uses threads
    assert count_tokens_batch(batch, encoding=encoding) == [e[encoding] for e in entries] * 200
    assert count_tokens_batch([], encoding=encoding) == []


def test_counts_from_many_threads_agree(encoding: str) -> None:
    entries = json.loads(FIXTURE.read_text(encoding="utf-8"))
    failures: list[str] = []

    def work() -> None:
        for entry in entries * 20:
            if count_tokens(entry["text"] * 3, encoding=encoding) != count_tokens(
                entry["text"] * 3, encoding=encoding
            ):
                failures.append(entry["text"])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures


chunked = st.lists(
    st.one_of(texts, st.sampled_from(["\ud83d", "\ude00", "'", "s", " ", "\n", "HTTP", "é"])),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(chunks=chunked)
def test_counter_total_equals_count_of_concatenation(chunks: list[str]) -> None:
    for encoding in ENCODINGS:
        counter = TokenCounter(encoding=encoding)
        for i, chunk in enumerate(chunks):
            counter.push(chunk)
            if i % 3 == 0:
                assert counter.total == count_tokens("".join(chunks[: i + 1]), encoding=encoding)
        assert counter.total == count_tokens("".join(chunks), encoding=encoding)


def test_counter_follows_a_long_stream_in_small_deltas(encoding: str) -> None:
    text = "\n".join(e["text"] for e in json.loads(FIXTURE.read_text(encoding="utf-8"))) * 5
    counter = TokenCounter(model="gpt-4o" if encoding == "o200k_base" else "gpt-4")
    rng = random.Random(3)
    pos = 0
    while pos < len(text):
        step = rng.randint(1, 12)
        counter.push(text[pos : pos + step])
        pos += step
    assert counter.encoding == encoding
    assert counter.total == count_tokens(text, encoding=encoding)


def test_counter_is_safe_across_threads() -> None:
    counter = TokenCounter(encoding="o200k_base")
    threads = [
        threading.Thread(target=lambda: [counter.push("word ") for _ in range(2_000)])
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counter.total == count_tokens("word " * 8_000, encoding="o200k_base")


def test_top_level_exports() -> None:
    assert aiofast.count_tokens is count_tokens
