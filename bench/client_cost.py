"""CPU per upstream call of lowrouter's upstream client, beside httpx's API over aiohttp's pool
(the client of release 0.2), in one process against the fake upstream, interleaved rounds:

    .venv/bin/python -m bench.client_cost [--calls 3000] [--rounds 4]

CPU time of this process only (the upstream is another process), so other work on the machine
moves it far less than wall-clock figures. Each call: a POST, the body read whole (json) or
every chunk of the stream iterated (stream), the connection back to the pool.
"""

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from bench.matrix import request_body, start_upstream
from domain.routing import Provider

Call = Callable[[bytes], Awaitable[int]]


def httpx_aiohttp_client(url: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    """Release 0.2's way: httpx.Request over the httpx-aiohttp transport, transport API."""
    import httpx
    from httpx_aiohttp import AiohttpTransport

    limits = httpx.Limits(max_connections=512, max_keepalive_connections=256, keepalive_expiry=30)
    transport = AiohttpTransport(limits=limits, trust_env=False)
    timeout = httpx.Timeout(120, connect=5.0).as_dict()
    target = httpx.URL(url)
    headers = httpx.Headers({"content-type": "application/json", "accept": "application/json"})

    async def call(body: bytes) -> int:
        request = httpx.Request(
            "POST", target, content=body, headers=headers, extensions={"timeout": timeout}
        )
        response = await transport.handle_async_request(request)
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
        await response.aclose()
        return size

    return call, transport.aclose


def lowrouter_client(url: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    from infrastructure.upstream import build_upstream

    upstream = build_upstream(120)
    provider = Provider("bench", url.removesuffix("/chat/completions"), "", "local")

    async def call(body: bytes) -> int:
        response = await upstream.send(provider, body)
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
        await response.aclose()
        return size

    return call, upstream.aclose


CLIENTS = {"httpx-aiohttp": httpx_aiohttp_client, "lowrouter": lowrouter_client}


async def cpu_per_call(
    make: Callable[..., tuple[Call, Any]], url: str, body: bytes, calls: int, concurrency: int
) -> float:
    call, close = make(url)
    try:
        for _ in range(50):  # warm the pool
            await call(body)
        started = time.process_time()
        per_task = calls // concurrency

        async def worker() -> None:
            for _ in range(per_task):
                await call(body)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return (time.process_time() - started) / (per_task * concurrency) * 1e6
    finally:
        await close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.client_cost")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    import uvloop

    with TemporaryDirectory() as work:
        upstream = start_upstream(Path(work))
        try:
            url = upstream.url + "/v1/chat/completions"
            for mode in ("json", "stream"):
                body = request_body(mode == "stream")
                figures: dict[str, list[float]] = {name: [] for name in CLIENTS}
                for _ in range(args.rounds):
                    for name, make in CLIENTS.items():
                        us = uvloop.run(cpu_per_call(make, url, body, args.calls, args.concurrency))
                        figures[name].append(us)
                for name, values in figures.items():
                    print(
                        f"{mode:<6} {name:<14} CPU µs/call median {statistics.median(values):7.1f}"
                        f"  rounds {[round(v) for v in values]}"
                    )
        finally:
            upstream.stop()


if __name__ == "__main__":
    main()
