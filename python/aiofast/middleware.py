"""aiofast inside an existing aiohttp application.

``setup(app, policy, routes=[...])`` ties a pipeline to the app's lifetime, puts the
admission middleware in front of the chosen routes, exposes a shared
:class:`~aiofast.client.Client` at ``app[aiofast.CLIENT]``, and optionally mounts the
gateway's own OpenAI-compatible routes under a prefix. ``middleware(pipeline)`` is the
bare middleware, for apps that compose their own list.

For each request to a chosen route the middleware identifies the caller by virtual key,
runs the input guard and the limits before the handler, and settles after it. LLM calls
the handler makes through the Client are attributed to that caller and tied to the
request id (``x-aiofast-request-id``), so outcomes reported for it cover their cost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web
from aiohttp.typedefs import Middleware

from aiofast.client import Client, current_request
from aiofast.context import RequestContext
from aiofast.gateway import (
    PIPELINE,
    add_routes,
    authenticate,
    error_response,
    is_gateway_handler,
)
from aiofast.parsing import API_CHAT
from aiofast.pipeline import Pipeline
from aiofast.policy import Policy
from aiofast.refusals import RequestRefused
from aiofast.routing.tags import TAGS_HEADER, parse_tags

__all__ = ["CLIENT", "REQUEST_CONTEXT", "middleware", "setup"]

logger = logging.getLogger("aiofast.middleware")

CLIENT = web.AppKey("aiofast.client", Client)
REQUEST_CONTEXT = web.RequestKey("aiofast.request_context", RequestContext)

API_APP = "app"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def setup(
    app: web.Application,
    policy: Policy | Pipeline,
    *,
    routes: Iterable[str] | None = None,
    gateway_prefix: str | None = None,
) -> Pipeline:
    """Mount aiofast on ``app``.

    ``routes``: paths (as registered, such as ``/ask`` or ``/items/{id}``) whose requests
    are admitted by the middleware; None means every route. ``gateway_prefix``: also
    serve the gateway's LLM and admin routes under this prefix (``""`` for ``/v1/...``).
    """
    pipeline = policy if isinstance(policy, Pipeline) else Pipeline(policy)
    if gateway_prefix is not None:
        add_routes(app, pipeline, prefix=gateway_prefix, admin_prefix=f"{gateway_prefix}/aiofast")
    else:
        app[PIPELINE] = pipeline
        app.on_startup.append(_start)
        app.on_cleanup.append(_close)
    app[CLIENT] = Client(pipeline)
    app.middlewares.append(middleware(pipeline, routes=routes))
    return pipeline


async def _start(app: web.Application) -> None:
    await app[PIPELINE].start()


async def _close(app: web.Application) -> None:
    await app[PIPELINE].close()


def middleware(pipeline: Pipeline, *, routes: Iterable[str] | None = None) -> Middleware:
    """The admission middleware for ``routes`` (None: every route but the gateway's own)."""
    chosen = None if routes is None else frozenset(routes)

    @web.middleware
    async def aiofast_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route
        path = route.resource.canonical if route.resource is not None else request.path
        if is_gateway_handler(route.handler) or (chosen is not None and path not in chosen):
            return await handler(request)
        return await _admitted(pipeline, request, handler)

    return aiofast_middleware


async def _admitted(
    pipeline: Pipeline, request: web.Request, handler: Handler
) -> web.StreamResponse:
    ctx = pipeline.context(API_APP, {}, started=time.perf_counter())
    ctx.requested_model = request.path
    token = current_request.set(ctx)
    try:
        ctx.identity = authenticate(pipeline.keys, request)
        ctx.tags = parse_tags(request.headers.get(TAGS_HEADER))
        await pipeline.admit_caller(ctx)
        request[REQUEST_CONTEXT] = ctx
        response = await handler(request)
        ctx.status = response.status
        if not response.prepared:
            response.headers["x-aiofast-request-id"] = ctx.request_id
            response.headers.update(ctx.response_headers)
        return response
    except RequestRefused as refusal:
        pipeline.refuse(ctx, refusal)
        return error_response(refusal, API_CHAT, pipeline.facts_headers(ctx))
    except web.HTTPException as exc:
        # The handler's own answer (redirect, 404...): record it and let it carry on.
        ctx.status = exc.status
        raise
    except BaseException:
        ctx.status, ctx.error_type = 500, "handler_error"
        raise
    finally:
        current_request.reset(token)
        pipeline.settle(ctx)
