"""The floor: a bare Starlette pass-through proxy on lowrouter's server stack (uvicorn with uvloop
and httptools), with no auth and no ledger, forwarding to one upstream with one pooled client.

    BENCH_UPSTREAM_URL=http://127.0.0.1:9000/v1 BENCH_TRANSPORT=aiohttp \\
        uvicorn bench.bare_proxy:create_app --factory --port 9001

BENCH_TRANSPORT chooses the client, so their cost can be compared on equal terms:
- `httpx`          httpx.AsyncClient with its default transport (httpcore), as lowrouter has it;
- `httpx-aiohttp`  httpx.AsyncClient over the `httpx-aiohttp` transport (httpx's API,
                   aiohttp's connection pool);
- `aiohttp`        an aiohttp.ClientSession, directly.

The proxy reads the body, looks at `stream` (as any gateway must), forwards it, and relays the
answer: whole for a completion, chunk by chunk for a stream.
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

TRANSPORTS = ("httpx", "httpx-aiohttp", "aiohttp")
MAX_CONNECTIONS = 512
JSON_HEADERS = {"content-type": "application/json", "accept": "application/json"}


class Forwarder(Protocol):
    async def complete(self, url: str, body: bytes) -> Response: ...
    async def stream(self, url: str, body: bytes) -> Response: ...
    async def aclose(self) -> None: ...


class HttpxForwarder:
    def __init__(self, transport: str) -> None:
        import httpx

        limits = httpx.Limits(
            max_connections=MAX_CONNECTIONS, max_keepalive_connections=256, keepalive_expiry=30
        )
        kwargs: dict[str, Any] = {"limits": limits}
        if transport == "httpx-aiohttp":
            from httpx_aiohttp import AiohttpTransport

            kwargs = {"transport": AiohttpTransport(limits=limits)}
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(120, connect=5.0), **kwargs)

    async def complete(self, url: str, body: bytes) -> Response:
        response = await self.client.post(url, content=body, headers=JSON_HEADERS)
        return Response(response.content, response.status_code, media_type="application/json")

    async def stream(self, url: str, body: bytes) -> Response:
        request = self.client.build_request("POST", url, content=body, headers=JSON_HEADERS)
        response = await self.client.send(request, stream=True)

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.aiter_raw():
                    yield chunk
            finally:
                await response.aclose()

        return StreamingResponse(relay(), response.status_code, media_type="text/event-stream")

    async def aclose(self) -> None:
        await self.client.aclose()


class AiohttpForwarder:
    def __init__(self) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS, keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(total=120, sock_connect=5),
        )

    async def complete(self, url: str, body: bytes) -> Response:
        async with self.session.post(url, data=body, headers=JSON_HEADERS) as response:
            content = await response.read()
            return Response(content, response.status, media_type="application/json")

    async def stream(self, url: str, body: bytes) -> Response:
        response = await self.session.post(url, data=body, headers=JSON_HEADERS)

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.content.iter_any():
                    yield chunk
            finally:
                response.release()

        return StreamingResponse(relay(), response.status, media_type="text/event-stream")

    async def aclose(self) -> None:
        await self.session.close()


def build_forwarder(transport: str) -> Forwarder:
    if transport not in TRANSPORTS:
        raise ValueError(f"BENCH_TRANSPORT must be one of {', '.join(TRANSPORTS)}")
    if transport == "aiohttp":
        return AiohttpForwarder()
    return HttpxForwarder(transport)


def create_app() -> Starlette:
    upstream = os.environ["BENCH_UPSTREAM_URL"].rstrip("/") + "/chat/completions"
    transport = os.environ.get("BENCH_TRANSPORT", "httpx")
    forwarders: list[Forwarder] = []

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        forwarders.append(build_forwarder(transport))  # inside the server's event loop
        try:
            yield
        finally:
            await forwarders[0].aclose()

    async def chat_completions(request: Request) -> Response:
        body = await request.body()
        if orjson.loads(body).get("stream"):
            return await forwarders[0].stream(upstream, body)
        return await forwarders[0].complete(upstream, body)

    async def healthz(_request: Request) -> Response:
        return PlainTextResponse("ok")

    routes = [
        Route("/api/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
