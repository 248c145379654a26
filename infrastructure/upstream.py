"""Talking to upstreams: one pooled client for every provider and dialect."""

import asyncio

import httpx
from httpx_aiohttp import AiohttpTransport

from domain.routing import Provider
from infrastructure.catalogue import DEMO_BASE_URL, DEMO_HOST
from infrastructure.dialects import anthropic, openai
from infrastructure.observability.upstream import observed_send


class UpstreamTransport(AiohttpTransport):
    """httpx's API over aiohttp's connection pool.

    httpx's own pool slows down badly under concurrency (encode/httpx#3215); measured in bench/:
    +43% requests/s at 64 concurrent, half the CPU per request. The adapter reports a refused or
    reset connection as a ConnectTimeout; we report it as the connection error it is, so an
    unreachable upstream is a 502 and only a real timeout a 504.
    """

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except httpx.ConnectTimeout as error:
            if isinstance(error.__cause__, asyncio.TimeoutError):
                raise
            raise httpx.ConnectError(str(error), request=request) from error.__cause__


class Upstream:
    """Sends requests to providers through httpx's transport API.

    httpx.AsyncClient.send adds auth, redirect, cookie and event-hook handling we never use, and
    costs about 140 µs of CPU per request (half of the whole upstream leg, measured in bench/);
    the transport is what does the work. Each provider's URLs and headers are built once.
    """

    def __init__(self, transport: httpx.AsyncBaseTransport, timeout: httpx.Timeout) -> None:
        self.transport = transport
        self._timeout = timeout.as_dict()
        self._targets: dict[tuple[Provider, str], tuple[httpx.URL, httpx.Headers]] = {}

    async def send(
        self, provider: Provider, content: bytes, path: str = "/chat/completions"
    ) -> httpx.Response:
        """POST to the provider's `path` (in its dialect); the body is not read yet (it may
        stream)."""
        target = self._targets.get((provider, path))
        if target is None:
            target = self._targets[(provider, path)] = (
                httpx.URL(f"{provider.base_url}{path}"),
                upstream_headers(provider),
            )
        url, headers = target
        request = httpx.Request(
            "POST", url, content=content, headers=headers, extensions={"timeout": self._timeout}
        )
        return await observed_send(self.transport, request, provider.name)

    async def aclose(self) -> None:
        await self.transport.aclose()


class InProcessDemo(httpx.AsyncBaseTransport):
    """Requests to the demo provider's host go to the demo app inside this process, so the demo
    upstream is never a public route (nothing unauthenticated reaches it); the rest go out."""

    def __init__(self, network: httpx.AsyncBaseTransport) -> None:
        from starlette.applications import Starlette
        from starlette.routing import Mount

        from infrastructure.demo_provider import demo_upstream_app

        self.network = network
        app = Starlette(routes=[Mount(httpx.URL(DEMO_BASE_URL).path, app=demo_upstream_app())])
        self.demo = httpx.ASGITransport(app=app)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == DEMO_HOST:
            return await self.demo.handle_async_request(request)
        return await self.network.handle_async_request(request)

    async def aclose(self) -> None:
        await self.network.aclose()


def build_upstream(timeout: float) -> Upstream:
    """One pooled client for the whole process (connections are reused across requests)."""
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=256, keepalive_expiry=30)
    transport = InProcessDemo(UpstreamTransport(limits=limits, trust_env=False))
    return Upstream(transport, httpx.Timeout(timeout, connect=5.0))


def upstream_headers(provider: Provider) -> httpx.Headers:
    """The provider's headers, in its dialect (the credential is never logged)."""
    dialect = anthropic if provider.api == "anthropic" else openai
    return httpx.Headers(dialect.headers(provider))
