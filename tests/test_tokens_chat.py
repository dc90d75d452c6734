"""Model to encoding, and chat request accounting against the published examples."""

from __future__ import annotations

import base64
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from aiofast import ChatTokens, ModelEncoding, count_chat, count_tokens, encoding_for_model
from aiofast.errors import InvalidInputError

# The examples of OpenAI's cookbook "How to count tokens with tiktoken", with the prompt
# token counts the API returned for them.
COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate "
        "jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities "
        "for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client "
        "deliverable.",
    },
]
COOKBOOK_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "description": "The city and state, e.g. San Francisco, CA",
                    },
                    "unit": {
                        "type": "string",
                        "description": "The unit of temperature to return",
                        "enum": ["celsius", "fahrenheit"],
                    },
                },
                "required": ["location"],
            },
        },
    }
]
COOKBOOK_TOOL_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful assistant that can answer to questions about the weather.",
    },
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]


@pytest.mark.parametrize(
    ("model", "expected"),
    [("gpt-3.5-turbo", 129), ("gpt-4-0613", 129), ("gpt-4o", 124), ("gpt-4o-mini", 124)],
)
def test_cookbook_messages(model: str, expected: int) -> None:
    result = count_chat({"model": model, "messages": COOKBOOK_MESSAGES})
    assert result.prompt_tokens == expected
    assert not result.estimated
    assert result.image_bound is None


@pytest.mark.parametrize(
    ("model", "expected"), [("gpt-3.5-turbo", 105), ("gpt-4", 105), ("gpt-4o", 101)]
)
def test_cookbook_tools(model: str, expected: int) -> None:
    request = {"model": model, "messages": COOKBOOK_TOOL_MESSAGES, "tools": COOKBOOK_TOOLS}
    assert count_chat(request).prompt_tokens == expected
    legacy = {"messages": COOKBOOK_TOOL_MESSAGES, "functions": [COOKBOOK_TOOLS[0]["function"]]}
    assert count_chat(legacy, model=model).prompt_tokens == expected


def test_raw_json_bytes_and_model_argument() -> None:
    body = orjson.dumps({"model": "gpt-4", "messages": COOKBOOK_MESSAGES})
    assert count_chat(body) == ChatTokens(129, "cl100k_base", False, None)
    assert count_chat(body, model="openai/gpt-4o-2024-08-06").prompt_tokens == 124


def test_unknown_or_missing_model_is_an_estimate() -> None:
    unknown = count_chat({"model": "claude-sonnet-4-5", "messages": COOKBOOK_MESSAGES})
    assert unknown == ChatTokens(124, "o200k_base", True, None)
    assert count_chat({"messages": COOKBOOK_MESSAGES}).estimated


def test_legacy_0301_framing() -> None:
    result = count_chat({"model": "gpt-3.5-turbo-0301", "messages": COOKBOOK_MESSAGES})
    # One more per message (6), one less per name (4 names, 2 each): 129 + 6 - 8.
    assert result.prompt_tokens == 127


def test_assistant_tool_calls_count_name_and_arguments() -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_current_weather", "arguments": '{"location": "Paris"}'},
    }
    messages = [
        *COOKBOOK_TOOL_MESSAGES,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "22 degrees"},
    ]
    result = count_chat({"model": "gpt-4o", "messages": messages})
    base = count_chat({"model": "gpt-4o", "messages": COOKBOOK_TOOL_MESSAGES}).prompt_tokens
    words = ["assistant", "get_current_weather", '{"location": "Paris"}', "tool", "22 degrees"]
    expected = base + 2 * 3 + 1 + sum(count_tokens(w, model="gpt-4o") for w in words)
    assert result.prompt_tokens == expected
    assert result.estimated


def _png(width: int, height: int) -> str:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    png = (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    )
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _jpeg(width: int, height: int) -> str:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return "data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8" + app0 + sof).decode()


def _image_request(model: str, url: str, detail: str | None) -> dict[str, Any]:
    image: dict[str, str] = {"url": url}
    if detail is not None:
        image["detail"] = detail
    content = [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": image}]
    return {"model": model, "messages": [{"role": "user", "content": content}]}


def _text_only(model: str) -> int:
    request = {"model": model, "messages": [{"role": "user", "content": "What is this?"}]}
    return count_chat(request).prompt_tokens


@pytest.mark.parametrize(
    ("model", "url", "detail", "image_tokens", "bound"),
    [
        ("gpt-4o", _png(1024, 1024), "high", 765, None),  # 768x768: 4 tiles
        ("gpt-4o", _jpeg(2048, 4096), "auto", 1105, None),  # 768x1536: 6 tiles
        ("gpt-4o", _png(4000, 3000), "low", 85, None),
        ("gpt-4o-mini", _png(512, 512), "high", 2833 + 5667, None),
        ("o1", _png(100, 100), None, 75 + 150, None),
        ("gpt-4o", "https://example.com/cat.png", "high", 85 + 170 * 8, "upper"),
        ("gpt-4o", "https://example.com/cat.png", "low", 85, None),
        ("gpt-4.1-mini", _png(1024, 1024), "high", int(1024 * 1.62), None),
        ("gpt-4.1-mini", _png(1800, 2400), "high", int(1452 * 1.62), None),  # documented
        ("gpt-4.1-nano", _png(4096, 4096), "low", int(39 * 39 * 2.46), None),
        ("o4-mini", "https://example.com/cat.png", "auto", int(1536 * 1.72), "upper"),
    ],
)
def test_image_parts(
    model: str, url: str, detail: str | None, image_tokens: int, bound: str | None
) -> None:
    result = count_chat(_image_request(model, url, detail))
    assert result.prompt_tokens == _text_only(model) + image_tokens
    assert result.image_bound == bound


def test_malformed_requests_say_what_is_wrong() -> None:
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        count_chat(b"{nope")
    with pytest.raises(InvalidInputError, match=r"request\['messages'\]"):
        count_chat({"model": "gpt-4o"})
    with pytest.raises(InvalidInputError, match="every item"):
        count_chat({"messages": ["hi"]})


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-2024-08-06", "o200k_base"),
        ("openai/gpt-4o-mini", "o200k_base"),
        ("azure/gpt-4.1-nano", "o200k_base"),
        ("gpt-4.5-preview", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("gpt-5.1-chat-latest", "o200k_base"),
        ("o1", "o200k_base"),
        ("o3-mini-2025-01-31", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("ft:gpt-4o-mini-2024-07-18:acme::abc123", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-0613", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo-0125", "cl100k_base"),
        ("azure/gpt-35-turbo", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("text-embedding-ada-002", "cl100k_base"),
        ("OpenAI/GPT-4o", "o200k_base"),
    ],
)
def test_known_models(model: str, encoding: str) -> None:
    assert encoding_for_model(model) == ModelEncoding(encoding, estimated=False)


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "llama-3-70b", "gpt-40", "o10"])
def test_unknown_models_default_to_o200k_as_an_estimate(model: str) -> None:
    assert encoding_for_model(model) == ModelEncoding("o200k_base", estimated=True)


def _cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiofast.cli", "count", *args],
        input=stdin.decode(),
        capture_output=True,
        text=True,
        check=False,
    )


def test_cli_counts_a_file_and_stdin(tmp_path: Path) -> None:
    path = tmp_path / "text.txt"
    path.write_text("hello world, it's a test", encoding="utf-8")
    expected = count_tokens("hello world, it's a test", encoding="cl100k_base")
    assert _cli("--encoding", "cl100k_base", str(path)).stdout.strip() == str(expected)
    assert _cli("--model", "gpt-4", "-", stdin=b"hello world, it's a test").stdout.strip() == str(
        expected
    )


def test_cli_counts_a_chat_request(tmp_path: Path) -> None:
    path = tmp_path / "request.json"
    path.write_bytes(orjson.dumps({"model": "gpt-4o", "messages": COOKBOOK_MESSAGES}))
    result = _cli("--chat", str(path))
    assert orjson.loads(result.stdout) == {
        "prompt_tokens": 124,
        "encoding": "o200k_base",
        "estimated": False,
        "image_bound": None,
    }


def test_cli_errors_name_the_problem(tmp_path: Path) -> None:
    missing = _cli(str(tmp_path / "nope.txt"))
    assert missing.returncode == 1
    assert "cannot read FILE" in missing.stderr
    bad_json = _cli("--chat", "-", stdin=b"{")
    assert bad_json.returncode == 1
    assert "not valid JSON" in bad_json.stderr
