"""A fast fake OpenAI-compatible upstream: a raw ASGI app with fixed answers.

    uvicorn bench.upstream:app --host 127.0.0.1 --port 9000

`POST …/chat/completions` answers a fixed `chat.completion` with usage, or, when the request asks
for `"stream": true`, an SSE stream of three content chunks, a finish chunk, a usage-only chunk and
`[DONE]`, written in one go. Anything else (e.g. `GET /healthz`) answers 200 "ok". There is no
routing, no validation and no per-request allocation beyond reading the body: the upstream must
cost far less than the proxies measured against it.
"""

import orjson

from bench.asgi import Receive, Scope, Send, read_body

_CREATED = 1_700_000_000
_USAGE = {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}

COMPLETION = orjson.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": _CREATED,
        "model": "fast",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello from the bench upstream."},
                "finish_reason": "stop",
            }
        ],
        "usage": _USAGE,
    }
)


def _chunk(delta: dict[str, str], finish: str | None = None, usage: bool = False) -> bytes:
    choices = [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]
    body: dict[str, object] = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": _CREATED,
        "model": "fast",
        "choices": choices,
    }
    if usage:
        body["usage"] = _USAGE
    return b"data: " + orjson.dumps(body) + b"\n\n"


STREAM = b"".join(
    [
        _chunk({"role": "assistant", "content": "Hello"}),
        _chunk({"content": " from the"}),
        _chunk({"content": " bench upstream."}),
        _chunk({}, finish="stop"),
        _chunk({}, usage=True),
        b"data: [DONE]\n\n",
    ]
)

_JSON_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(COMPLETION)).encode()),
]
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"content-length", str(len(STREAM)).encode()),
]
_OK_HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"2")]


def wants_stream(body: bytes) -> bool:
    """Whether a chat request asks for a stream (a cheap test; the bench sends compact JSON)."""
    return b'"stream":true' in body or b'"stream": true' in body


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    if scope["method"] != "POST":
        await _answer(send, _OK_HEADERS, b"ok")
        return
    body = await read_body(receive)
    if wants_stream(body):
        await _answer(send, _SSE_HEADERS, STREAM)
    else:
        await _answer(send, _JSON_HEADERS, COMPLETION)


async def lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _answer(send: Send, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
