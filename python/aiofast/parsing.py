"""The parse stage: one orjson pass over the body and the checks a provider would make.

Only the fields the pipeline relies on are checked (``model``, ``messages``, ``input``,
``stream``, ``stream_options``, ``max_tokens``); everything else is forwarded untouched
for the provider to judge. Failures are 400 refusals naming the parameter.
"""

from __future__ import annotations

from typing import Any

import orjson

from aiofast.refusals import bad_request

__all__ = ["API_CHAT", "API_EMBEDDINGS", "API_MESSAGES", "parse_body"]

API_CHAT = "chat"
API_EMBEDDINGS = "embeddings"
API_MESSAGES = "messages"


def parse_body(api: str, raw: bytes) -> dict[str, Any]:
    """Parse and check a request body of ``api``; raise a 400 RequestRefused if it is unusable."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"We could not parse the JSON body of your request: {exc}") from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object")
    _string(body, "model")
    if api == API_EMBEDDINGS:
        _embedding_input(body)
        return body
    _messages(body)
    for name in ("stream",):
        if name in body and not isinstance(body[name], bool) and body[name] is not None:
            raise bad_request(f"'{name}' must be a boolean", param=name)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad_request("'stream_options' must be an object", param="stream_options")
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise bad_request(f"'{name}' must be an integer", param=name)
    if api == API_MESSAGES and not isinstance(body.get("max_tokens"), int):
        raise bad_request("'max_tokens' is required by the Messages API", param="max_tokens")
    return body


def _string(body: dict[str, Any], name: str) -> None:
    value = body.get(name)
    if value is None:
        raise bad_request(f"you must provide a '{name}' parameter", param=name)
    if not isinstance(value, str) or not value:
        raise bad_request(f"'{name}' must be a non-empty string", param=name)


def _messages(body: dict[str, Any]) -> None:
    messages = body.get("messages")
    if messages is None:
        raise bad_request("you must provide a 'messages' parameter", param="messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty array", param="messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise bad_request(
                f"messages[{index}] must be an object with a string 'role'",
                param=f"messages[{index}]",
            )


def _embedding_input(body: dict[str, Any]) -> None:
    value = body.get("input")
    if isinstance(value, str) and value:
        return
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return
    raise bad_request("'input' must be a non-empty string or array of strings", param="input")
