"""An existing aiohttp application that answers questions through aiofast.

    python examples/aiohttp_app.py            # then:
    curl -s localhost:8081/ask -d '{"question": "What is aiofast?"}'

``aiofast.setup`` admits requests to ``/ask`` (virtual keys, guardrails and limits of the
policy), gives handlers a shared ``aiofast.Client`` and records every LLM call in the
ledger; ``gateway_prefix="/llm"`` also serves the OpenAI-compatible gateway under
``/llm/v1/...`` and its admin routes under ``/llm/aiofast/...``. Without a policy file
it uses the embedded default: the built-in simulated provider, no API key needed.
"""

from __future__ import annotations

import sys

from aiohttp import web

import aiofast


async def ask(request: web.Request) -> web.Response:
    body = await request.json()
    question = str(body.get("question", "")).strip()
    if not question:
        raise web.HTTPBadRequest(text="send {'question': '...'}")
    client = request.app[aiofast.CLIENT]
    result = await client.chat([{"role": "user", "content": question}], max_tokens=64)
    return web.json_response(
        {
            "answer": result.text,
            "model": result.model,
            "tier": result.tier,
            "cost_usd": result.cost_usd,
            "llm_request_id": result.request_id,
        }
    )


def make_app(policy: aiofast.Policy | None = None) -> web.Application:
    app = web.Application()
    app.router.add_post("/ask", ask)
    aiofast.setup(app, policy or aiofast.default_policy(), routes=["/ask"], gateway_prefix="/llm")
    return app


if __name__ == "__main__":
    config = sys.argv[1] if len(sys.argv) > 1 else None
    web.run_app(
        make_app(aiofast.load_policy(config) if config else None), host="127.0.0.1", port=8081
    )
