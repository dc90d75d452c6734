"""The gateway: OpenAI- and Anthropic-compatible HTTP routes over the pipeline.

LLM routes: ``POST /v1/chat/completions``, ``POST /v1/embeddings``,
``POST /v1/messages``, ``GET /v1/models``. Admin routes: ``GET /aiofast/health``,
``GET /aiofast/metrics``, ``GET /aiofast/usage``, ``POST /aiofast/outcomes``.
:func:`create_app` builds a standalone application; :func:`add_routes` mounts the same
handlers on an existing one (see :func:`aiofast.middleware.setup`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from aiofast.auth import ANONYMOUS, Identity, KeyRing, extract_key
from aiofast.ledger import GROUPS
from aiofast.limits.stage import LimitsStage
from aiofast.parsing import API_CHAT, API_EMBEDDINGS, API_MESSAGES, parse_body
from aiofast.pipeline import Pipeline
from aiofast.policy import Policy
from aiofast.prices import PriceTable
from aiofast.refusals import (
    RequestRefused,
    bad_request,
    forbidden,
    payload_too_large,
    unauthorized,
)
from aiofast.routing.tags import TAGS_HEADER, parse_tags
from aiofast.stages import Stages, TierRouter
from aiofast.timespec import parse_time

__all__ = ["PIPELINE", "add_routes", "create_app", "error_response"]

logger = logging.getLogger("aiofast.gateway")

PIPELINE = web.AppKey("aiofast.pipeline", Pipeline)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(
    policy: Policy, *, stages: Stages | None = None, prices: PriceTable | None = None
) -> web.Application:
    """A ready gateway application for ``policy``."""
    app = web.Application(
        client_max_size=policy.server.max_body_bytes, middlewares=[_errors_as_json]
    )
    add_routes(app, Pipeline(policy, stages=stages, prices=prices))
    return app


def add_routes(
    app: web.Application, pipeline: Pipeline, *, prefix: str = "", admin_prefix: str = "/aiofast"
) -> None:
    """Mount the gateway's routes on ``app`` and tie the pipeline to its lifetime."""
    app[PIPELINE] = pipeline
    app.on_startup.append(_start)
    app.on_cleanup.append(_close)
    router = app.router
    router.add_post(f"{prefix}/v1/chat/completions", _llm_handler(API_CHAT))
    router.add_post(f"{prefix}/v1/embeddings", _llm_handler(API_EMBEDDINGS))
    router.add_post(f"{prefix}/v1/messages", _llm_handler(API_MESSAGES))
    router.add_get(f"{prefix}/v1/models", _mark(_models))
    router.add_get(f"{admin_prefix}/health", _health)
    router.add_get(f"{admin_prefix}/metrics", _metrics)
    router.add_get(f"{admin_prefix}/usage", _usage)
    router.add_post(f"{admin_prefix}/outcomes", _outcomes)


async def _start(app: web.Application) -> None:
    await app[PIPELINE].start()


async def _close(app: web.Application) -> None:
    await app[PIPELINE].close()


def error_response(
    refusal: RequestRefused, api: str, facts: dict[str, str] | None = None
) -> web.Response:
    """A refusal as a JSON error response in the client's wire format."""
    headers = dict(refusal.headers)
    if facts is not None:
        headers.update(facts)
    return web.Response(
        status=refusal.status,
        body=refusal.body("anthropic" if api == API_MESSAGES else "openai"),
        content_type="application/json",
        headers=headers,
    )


def authenticate(keys: KeyRing, request: web.Request) -> Identity:
    """The caller's identity; 401 when keys are configured and none matches."""
    if not keys:
        return ANONYMOUS
    secret = extract_key(request.headers)
    if secret is None:
        raise unauthorized("You didn't provide an API key. Send it as 'Authorization: Bearer KEY'.")
    identity = keys.identify(secret)
    if identity is None:
        raise unauthorized("Incorrect API key provided.")
    return identity


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes."""
    length = request.content_length
    if length is not None and length > limit:
        raise payload_too_large(limit)
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise payload_too_large(limit) from None


_GATEWAY_MARK = "__aiofast_gateway__"


def _mark(handler: Handler) -> Handler:
    """Flag a handler as the gateway's own, so the app middleware leaves it alone."""
    setattr(handler, _GATEWAY_MARK, True)
    return handler


def is_gateway_handler(handler: object) -> bool:
    return getattr(handler, _GATEWAY_MARK, False) is True


def _llm_handler(api: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await _serve(request, api)

    handler.__name__ = f"aiofast_{api}"
    return _mark(handler)


async def _serve(request: web.Request, api: str) -> web.StreamResponse:
    pipeline = request.app[PIPELINE]
    ctx = pipeline.context(api, {}, started=time.perf_counter())
    response: web.StreamResponse | None = None
    try:
        ctx.identity = authenticate(pipeline.keys, request)
        ctx.tags = parse_tags(request.headers.get(TAGS_HEADER))
        raw = await read_body(request, pipeline.policy.server.max_body_bytes)
        pipeline.load(ctx, parse_body(api, raw), raw)
        await pipeline.admit(ctx)
        hit = await pipeline.cached(ctx)
        if hit is not None:
            return web.Response(
                body=hit.body, content_type="application/json", headers=pipeline.facts_headers(ctx)
            )
        call = await pipeline.call(ctx)
        if ctx.stream and call.status < 400:
            response = web.StreamResponse(headers=_stream_headers(pipeline.facts_headers(ctx)))
            await response.prepare(request)
            await pipeline.relay(ctx, call, response.write)
            with suppress(ConnectionError):
                await response.write_eof()
            return response
        body = await pipeline.complete(ctx, call)
        await pipeline.remember(ctx, body)
        return web.Response(
            body=body, content_type="application/json", headers=pipeline.facts_headers(ctx)
        )
    except RequestRefused as refusal:
        pipeline.refuse(ctx, refusal)
        if response is not None:
            return response
        return error_response(refusal, api, pipeline.facts_headers(ctx))
    except ConnectionError:
        ctx.status, ctx.error_type = 499, "client_disconnected"
        return response or web.Response(status=499)
    except Exception:
        logger.exception("internal error in request %s", ctx.request_id)
        ctx.status, ctx.error_type = 500, "internal_error"
        if response is not None:
            return response
        failure = RequestRefused(
            500,
            f"The gateway failed to handle this request (request id {ctx.request_id}); see its log",
            type="server_error",
        )
        return error_response(failure, api, pipeline.facts_headers(ctx))
    finally:
        pipeline.settle(ctx)


def _stream_headers(headers: dict[str, str]) -> dict[str, str]:
    headers["Content-Type"] = "text/event-stream"
    headers["Cache-Control"] = "no-cache"
    return headers


async def _models(request: web.Request) -> web.Response:
    pipeline = request.app[PIPELINE]
    try:
        authenticate(pipeline.keys, request)
    except RequestRefused as refusal:
        return error_response(refusal, API_CHAT)
    router = pipeline.stages.router
    names = router.names() if isinstance(router, TierRouter) else list(pipeline.policy.tiers)
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "aiofast"} for name in names]
    return _json({"object": "list", "data": data})


def _require_admin(request: web.Request, route: str) -> None:
    pipeline = request.app[PIPELINE]
    policy = pipeline.policy
    if route in policy.server.open_routes:
        return
    if pipeline.admin_keys:
        if pipeline.admin_keys.identify(extract_key(request.headers)) is None:
            raise unauthorized("This route needs an admin key (admin_keys in the policy).")
        return
    if policy.auth_required:
        raise forbidden("No admin key is configured; add one under admin_keys in the policy.")


def _admin(route: str) -> Callable[[Handler], Handler]:
    def wrap(handler: Handler) -> Handler:
        async def checked(request: web.Request) -> web.StreamResponse:
            try:
                _require_admin(request, route)
                return await handler(request)
            except RequestRefused as refusal:
                return error_response(refusal, API_CHAT)

        checked.__name__ = handler.__name__
        return _mark(checked)

    return wrap


@_admin("health")
async def _health(request: web.Request) -> web.StreamResponse:
    pipeline = request.app[PIPELINE]
    return _json(
        {
            "status": "ok",
            "policy_version": pipeline.policy.version,
            "upstreams": [u.name for u in pipeline.policy.upstreams],
            "tiers": list(pipeline.policy.tiers),
            **({"redis": pipeline.shared.health()} if pipeline.shared is not None else {}),
        }
    )


@_admin("metrics")
async def _metrics(request: web.Request) -> web.StreamResponse:
    body = request.app[PIPELINE].metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@_admin("usage")
async def _usage(request: web.Request) -> web.StreamResponse:
    ledger = request.app[PIPELINE].ledger
    query = request.query
    group_by = [g for g in query.get("group_by", "model").split(",") if g]
    unknown = [g for g in group_by if g not in GROUPS]
    if unknown:
        raise bad_request(
            f"cannot group by {unknown}; choose from {sorted(GROUPS)}", param="group_by"
        )
    try:
        since = parse_time(query["since"]) if "since" in query else None
        until = parse_time(query["until"]) if "until" in query else None
    except ValueError as exc:
        raise bad_request(str(exc), param="since") from None

    def read() -> list[dict[str, Any]]:
        ledger.flush()
        return ledger.summarize(group_by, since, until)

    rows = await asyncio.to_thread(read)
    limiter = request.app[PIPELINE].stages.limiter
    limits = limiter.report() if isinstance(limiter, LimitsStage) else None
    return _json(
        {"group_by": group_by, "since": since, "until": until, "rows": rows, "limits": limits}
    )


@_admin("outcomes")
async def _outcomes(request: web.Request) -> web.StreamResponse:
    ledger = request.app[PIPELINE].ledger
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise bad_request("The body must be JSON") from None
    items = body.get("outcomes") if isinstance(body, dict) and "outcomes" in body else [body]
    if not isinstance(items, list):
        raise bad_request("'outcomes' must be an array", param="outcomes")
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("request_id"), str):
            raise bad_request(f"outcome {index} needs a string 'request_id'", param="request_id")
        if not isinstance(item.get("success"), bool):
            raise bad_request(f"outcome {index} needs a boolean 'success'", param="success")
    for item in items:
        ledger.record_outcome(item["request_id"], item["success"], str(item.get("detail", "")))
    return _json({"recorded": len(items)})


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


@web.middleware
async def _errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own errors (unknown route, wrong method) in the OpenAI error format."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        refusal = RequestRefused(exc.status, exc.reason, type="invalid_request_error", code=None)
        return error_response(refusal, API_CHAT)
