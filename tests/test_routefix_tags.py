"""Request tags: ``x-aiofast-tags`` parsed at the gateway (or ``tags=`` of the Client) and
matched by routing rules alongside the key's labels, end to end against the simulated
provider."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp import web

import aiofast
from aiofast.auth import digest
from aiofast.refusals import RequestRefused
from aiofast.routing.tags import MAX_TAG_LENGTH, MAX_TAGS, parse_tags, route_tags
from gateway_support import chat, running, simulated_policy

DEV, PLAIN = "sk-dev-routefix-tags", "sk-plain-routefix-tags"
ROUTES = [
    {"name": "batch", "when": {"tags_any": ["batch"]}, "tier": "large"},
    {"name": "prod", "when": {"tags_all": ["env=prod", "team=search"]}, "tier": "medium"},
]


def _policy() -> Any:
    keys = [
        {"digest": digest(DEV), "name": "dev", "labels": {"env": "dev"}},
        {"digest": digest(PLAIN), "name": "plain"},
    ]
    return simulated_policy(extra={"keys": keys, "routes": ROUTES})


def _headers(secret: str, tags: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {secret}"}
    if tags is not None:
        headers["x-aiofast-tags"] = tags
    return headers


def _served_by(headers: Any) -> str:
    route = dict(part.split("=", 1) for part in headers["x-aiofast-route"].split("; "))
    return route["served_by"]


async def test_rules_match_request_tags_and_key_labels_win() -> None:
    async with running(_policy()) as gateway:
        tagged = await gateway.post("/v1/chat/completions", chat(), _headers(PLAIN, " batch "))
        untagged = await gateway.post("/v1/chat/completions", chat(), _headers(PLAIN))
        prod = await gateway.post(
            "/v1/chat/completions", chat(), _headers(PLAIN, "env=prod,team=search")
        )
        # The dev key's own label env=dev stands: a request cannot claim env=prod.
        spoofed = await gateway.post(
            "/v1/chat/completions", chat(), _headers(DEV, "env=prod,team=search")
        )
    assert [r[0] for r in (tagged, untagged, prod, spoofed)] == [200] * 4
    assert _served_by(tagged[1]) == "large"
    assert _served_by(untagged[1]) == "small"
    assert _served_by(prod[1]) == "medium"
    assert _served_by(spoofed[1]) == "small"


@pytest.mark.parametrize(
    "header",
    [
        "bad tag",
        "a,,b",
        "=value",
        "name=",
        "name=with space",
        ",".join(f"t{i}" for i in range(MAX_TAGS + 1)),
        "t=" + "v" * MAX_TAG_LENGTH,
    ],
)
async def test_an_invalid_header_is_an_openai_400_naming_it(header: str) -> None:
    async with running(_policy()) as gateway:
        status, _, body = await gateway.post(
            "/v1/chat/completions", chat(), _headers(PLAIN, header)
        )
        rows = gateway.events()
    error = orjson.loads(body)["error"]
    assert status == 400
    assert (error["type"], error["param"]) == ("invalid_request_error", "x-aiofast-tags")
    assert "x-aiofast-tags" in error["message"]
    assert [r["status"] for r in rows] == [400]


def test_parse_keeps_order_and_drops_duplicates_and_blanks() -> None:
    assert parse_tags(None) == parse_tags("  ") == []
    assert parse_tags("b, a=1 ,b,team:x=y/z") == ["b", "a=1", "team:x=y/z"]
    assert parse_tags(",".join(f"t{i}" for i in range(MAX_TAGS))) == [
        f"t{i}" for i in range(MAX_TAGS)
    ]


def test_too_many_tags_names_the_limit() -> None:
    with pytest.raises(RequestRefused, match=f"at most {MAX_TAGS} tags"):
        parse_tags(",".join("x" * (MAX_TAGS + 1)))


def test_route_tags_put_key_labels_first_and_drop_request_tags_that_shadow_them() -> None:
    labels = {"env": "dev", "user_tier": "free"}
    tags = ["env=prod", "batch", "user_tier", "region=eu"]
    assert route_tags(labels, tags) == ["env=dev", "user_tier=free", "batch", "region=eu"]


async def test_client_calls_take_tags_from_the_argument_or_the_app_request() -> None:
    async def handler(request: web.Request) -> web.Response:
        client = request.app[aiofast.CLIENT]
        inherited = await client.chat([{"role": "user", "content": "hi"}])
        overridden = await client.chat([{"role": "user", "content": "hi"}], tags=[])
        return web.json_response({"inherited": inherited.tier, "overridden": overridden.tier})

    app = web.Application()
    app.router.add_get("/ask", handler)
    aiofast.setup(app, _policy(), routes=["/ask"])
    async with running(app) as server:
        status, _, body = await server.get("/ask", _headers(PLAIN, "batch"))
        assert (status, orjson.loads(body)) == (200, {"inherited": "large", "overridden": "small"})
        assert (await server.get("/ask", _headers(PLAIN, "bad tag")))[0] == 400

    async with aiofast.Client(_policy()) as client:
        tagged = await client.chat([{"role": "user", "content": "hi"}], tags=["batch"])
        assert tagged.tier == "large"
        with pytest.raises(RequestRefused) as refused:
            await client.chat([{"role": "user", "content": "hi"}], tags=["bad tag"])
    assert refused.value.status == 400
    assert "tags argument" in refused.value.message
