"""Calls to providers: one shared aiohttp ClientSession, per-upstream timeouts.

:class:`UpstreamPool` owns the session (connection reuse across every request) and the
in-process simulated providers. :meth:`UpstreamPool.send` returns an
:class:`UpstreamCall` as soon as the status and headers are in, so the pipeline can
decide (retry, relay, refuse) before any body byte goes to the client. Transport
failures become :class:`~aiofast.refusals.RequestRefused` 502/504 with a clear message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from aiofast._core import __version__
from aiofast.errors import ConfigError
from aiofast.policy import DeploymentPolicy, Policy, UpstreamPolicy
from aiofast.refusals import RequestRefused, upstream_failed, upstream_timeout
from aiofast.simulated import SimulatedProvider, SimulatedServer

__all__ = ["UpstreamCall", "UpstreamPool"]

logger = logging.getLogger("aiofast.upstream")

ANTHROPIC_VERSION = "2023-06-01"
USER_AGENT = f"aiofast/{__version__}"


class UpstreamCall:
    """A response whose headers arrived; read its body whole or chunk by chunk."""

    __slots__ = ("_response", "deployment", "upstream")

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        deployment: DeploymentPolicy,
        upstream: UpstreamPolicy,
    ) -> None:
        self._response = response
        self.deployment = deployment
        self.upstream = upstream

    @property
    def status(self) -> int:
        return self._response.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    async def read(self) -> bytes:
        """The whole body; a cut or a stall becomes a 502/504 refusal."""
        try:
            return await self._response.read()
        except Exception as exc:
            raise _transport_refusal(exc, self.upstream) from exc
        finally:
            self._response.release()

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as the network delivers them; failures raise a RequestRefused."""
        content = self._response.content
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    return
                yield chunk
        except Exception as exc:
            raise _transport_refusal(exc, self.upstream) from exc

    def parsed(self) -> dict[str, Any] | None:
        """The whole body already parsed as a JSON object by whoever read it (the
        routing stage does, for its output checks), else None: parse ``read()``."""
        return None

    def close(self) -> None:
        """Stop reading and drop the connection; used when the client went away."""
        self._response.close()


class UpstreamPool:
    """Every upstream of a policy behind one ClientSession."""

    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._session: aiohttp.ClientSession | None = None
        self._simulators: dict[str, SimulatedServer] = {}
        self._targets: dict[str, tuple[str, dict[str, str], aiohttp.ClientTimeout]] = {}

    async def start(self) -> None:
        for upstream in self._policy.upstreams:
            base_url = upstream.base_url
            if upstream.kind == "simulated":
                server = SimulatedServer(SimulatedProvider(upstream.simulated))
                await server.start()
                self._simulators[upstream.name] = server
                base_url = server.base_url
            if base_url is None:
                raise ConfigError(f"upstreams.{upstream.name}.base_url is required")
            timeouts = upstream.timeouts
            timeout = aiohttp.ClientTimeout(
                total=timeouts.total,
                sock_connect=timeouts.connect,
                sock_read=timeouts.first_byte,
            )
            self._targets[upstream.name] = (base_url.rstrip("/"), _auth_headers(upstream), timeout)
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        # The User-Agent is among the upstream headers: a session-wide skip list would
        # cost aiohttp a header merge on every request.
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        for server in self._simulators.values():
            await server.close()
        self._simulators.clear()

    def base_url(self, upstream: str) -> str:
        return self._targets[upstream][0]

    async def send(self, deployment: DeploymentPolicy, path: str, body: bytes) -> UpstreamCall:
        """POST ``body`` to ``path`` (``/chat/completions``) of the deployment's upstream."""
        session = self._session
        if session is None:
            raise RuntimeError("UpstreamPool.start() was not awaited")
        upstream = self._policy.upstream(deployment.upstream)
        base_url, headers, timeout = self._targets[upstream.name]
        try:
            response = await session.post(
                base_url + path, data=body, headers=headers, timeout=timeout
            )
        except Exception as exc:
            raise _transport_refusal(exc, upstream) from exc
        return UpstreamCall(response, deployment, upstream)


def _auth_headers(upstream: UpstreamPolicy) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    key = upstream.api_key()
    if upstream.kind == "anthropic":
        headers["anthropic-version"] = ANTHROPIC_VERSION
        if key:
            headers["x-api-key"] = key
    elif key:
        headers["Authorization"] = f"Bearer {key}"
    headers.update(upstream.headers)
    return headers


def _transport_refusal(exc: BaseException, upstream: UpstreamPolicy) -> RequestRefused:
    if isinstance(exc, RequestRefused):
        return exc
    name = upstream.name
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        logger.warning("upstream %s timed out", name)
        return upstream_timeout(f"Upstream {name!r} did not answer in time (upstreams.timeouts)")
    if isinstance(exc, aiohttp.ClientConnectorError):
        logger.warning("upstream %s unreachable: %s", name, exc)
        return upstream_failed(f"Upstream {name!r} cannot be reached")
    logger.warning("upstream %s failed: %s", name, type(exc).__name__)
    return upstream_failed(f"Upstream {name!r} broke the connection")
