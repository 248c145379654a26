"""A fake upstream shaped like an LLM: the first token after BENCH_LLM_FIRST_TOKEN_S (0.2 s), then
BENCH_LLM_CHUNKS_PER_S (50) content chunks a second for BENCH_LLM_SECONDS (10 s), a finish chunk, a
usage chunk and `[DONE]`.

    BENCH_LLM_SECONDS=10 uvicorn bench.llm_upstream:app --port 9002

Every content chunk's text is `t<monotonic seconds> `, the moment it was written: the client
reads it back from what the gateway relayed and knows how long the chunk took to get through
(CLOCK_MONOTONIC is one clock for every process of the machine). One ticker drives every stream
(one timer for a thousand streams, not a thousand), so the upstream stays cheap.
"""

import asyncio
import os
import time

from bench.asgi import Receive, Scope, Send, read_body
from bench.upstream import lifespan

FIRST_TOKEN_S = float(os.environ.get("BENCH_LLM_FIRST_TOKEN_S", "0.2"))
CHUNKS_PER_S = float(os.environ.get("BENCH_LLM_CHUNKS_PER_S", "50"))
SECONDS = float(os.environ.get("BENCH_LLM_SECONDS", "10"))
CHUNKS = round(CHUNKS_PER_S * SECONDS)

_HEAD = b'data: {"id":"chatcmpl-llm","object":"chat.completion.chunk","created":1700000000,'
_HEAD += b'"model":"fast","choices":[{"index":0,"delta":{"content":"t'
_TAIL = b' "},"finish_reason":null}]}\n\n'
_END = (
    b'data: {"id":"chatcmpl-llm","object":"chat.completion.chunk","created":1700000000,'
    b'"model":"fast","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b'data: {"id":"chatcmpl-llm","object":"chat.completion.chunk","created":1700000000,'
    b'"model":"fast","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":'
    + str(CHUNKS).encode()
    + b',"total_tokens":'
    + str(CHUNKS + 9).encode()
    + b"}}\n\ndata: [DONE]\n\n"
)
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_OK_HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"2")]


class Ticker:
    """A future that completes every 1/CHUNKS_PER_S seconds, shared by every stream."""

    def __init__(self) -> None:
        self._next: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    def tick(self) -> "asyncio.Future[None]":
        if self._task is None:
            self._next = asyncio.get_running_loop().create_future()
            self._task = asyncio.get_running_loop().create_task(self._run())
        assert self._next is not None
        return self._next

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        period = 1 / CHUNKS_PER_S
        due = loop.time()
        while True:
            due += period
            await asyncio.sleep(max(0.0, due - loop.time()))
            done, self._next = self._next, loop.create_future()
            assert done is not None
            done.set_result(None)


TICKER = Ticker()


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    if scope["method"] != "POST":
        await send({"type": "http.response.start", "status": 200, "headers": _OK_HEADERS})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    await read_body(receive)
    await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
    await asyncio.sleep(FIRST_TOKEN_S)
    for _ in range(CHUNKS):
        stamp = f"{time.monotonic():.6f}".encode()
        await send({"type": "http.response.body", "body": _HEAD + stamp + _TAIL, "more_body": True})
        await TICKER.tick()
    await send({"type": "http.response.body", "body": _END})
