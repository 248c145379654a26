"""A fake OpenAI-compatible upstream on a real uvicorn server, for tests of the gateway.

    with run_fake_upstream(slow_seconds=2.0) as upstream:
        catalogue_file = write_catalogue(tmp_path / "lowrouter.toml", upstream.base_url)
        ...  # point the gateway at it; environ needs FAKE_API_KEY_ENV set (see `fake_environ`)
        assert upstream.requests[-1].body["model"] == "fake-ok"

Behaviour is chosen per request by the upstream model name: "fake-<mode>" (or just "<mode>"),
one of MODES; any other name uses `upstream.mode` (default "ok"), which a test may change.

- ok               normal answer ("Hello from the fake upstream", cut at max_tokens), usage present;
                   streams honour stream_options.include_usage with a final usage chunk.
- stream-no-usage  like ok, but never reports usage (no usage chunk even if asked; no usage block).
- slow             sleeps `slow_seconds` before answering (then answers like ok).
- stall            streams two chunks, sleeps `slow_seconds`, then finishes (non-streaming: slow).
- error500         500 with an OpenAI-style error body.
- garbage          200 whose body is not JSON (streaming: an SSE data line that is not JSON).
- hangup           closes the connection mid-response (streaming: after three chunks).
- overrun          like ok, but usage reports 100 more completion tokens than max_tokens allowed.

Prompt tokens are the whitespace-separated words of all messages (at least 1).
"""

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

MODES = (
    "ok",
    "stream-no-usage",
    "slow",
    "stall",
    "error500",
    "garbage",
    "hangup",
    "overrun",
)
REPLY_WORDS = ("Hello", "from", "the", "fake", "upstream")
OVERRUN_EXTRA_TOKENS = 100
FAKE_API_KEY_ENV = "LOWROUTER_FAKE_UPSTREAM_KEY"
FAKE_API_KEY = "fake-upstream-secret"


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any  # the parsed JSON body, or None


@dataclass
class FakeUpstream:
    mode: str = "ok"  # for model names that do not name a mode
    slow_seconds: float = 5.0
    chunk_delay: float = 0.0  # pause between streamed chunks
    base_url: str = ""  # "http://127.0.0.1:PORT/v1" once running
    requests: list[RecordedRequest] = field(default_factory=list)
    _stopping: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def bodies(self) -> list[Any]:
        return [request.body for request in self.requests if request.body is not None]

    def reset(self) -> None:
        self.requests.clear()

    def mode_for(self, model: object) -> str:
        name = str(model or "")
        name = name.removeprefix("fake-")
        return name if name in MODES else self.mode

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat_completions, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
            ]
        )

    # --- handlers -----------------------------------------------------------------------------

    async def _models(self, request: Request) -> Response:
        self._record(request, None)
        data = [{"id": f"fake-{mode}", "object": "model", "owned_by": "fake"} for mode in MODES]
        return JSONResponse({"object": "list", "data": data})

    async def _chat_completions(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        self._record(request, body)
        if not isinstance(body, dict):
            return _error(400, "invalid_request_error", "the body is not a JSON object")
        answer = _Answer(body, self.mode_for(body.get("model")))
        if answer.mode == "slow" or (answer.mode == "stall" and not answer.stream):
            await self._sleep(self.slow_seconds)
        if answer.mode == "error500":
            return _error(500, "server_error", "the fake upstream failed (error500)")
        if answer.mode == "garbage":
            return _garbage(answer.stream)
        if answer.mode == "hangup" and answer.stream:
            chunks = [chunk.encode() for chunk in answer.chunks()][:3]
            return _HangUp(chunks, "text/event-stream", None)
        if answer.mode == "hangup":
            full = json.dumps(answer.completion()).encode()
            return _HangUp([full[: len(full) // 2]], "application/json", len(full))
        if answer.stream:
            return StreamingResponse(self._stream(answer), media_type="text/event-stream")
        return JSONResponse(answer.completion())

    async def _stream(self, answer: "_Answer") -> AsyncIterator[str]:
        for index, chunk in enumerate(answer.chunks()):
            if index and self.chunk_delay:
                await self._sleep(self.chunk_delay)
            if answer.mode == "stall" and index == 2:
                await self._sleep(self.slow_seconds)
            yield chunk

    def _record(self, request: Request, body: Any) -> None:
        headers = {name.lower(): value for name, value in request.headers.items()}
        self.requests.append(RecordedRequest(request.method, request.url.path, headers, body))

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake up early when the server is shutting down."""
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set() and (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(left, 0.05))


class _Answer:
    def __init__(self, body: Mapping[str, Any], mode: str) -> None:
        self.mode = mode
        self.stream = body.get("stream") is True
        options = body.get("stream_options")
        self.include_usage = isinstance(options, dict) and options.get("include_usage") is True
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
        self.max_tokens = max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else None
        self.words = list(REPLY_WORDS[: self.max_tokens])
        self.finish_reason = "length" if len(self.words) < len(REPLY_WORDS) else "stop"
        self.prompt_tokens = max(1, _count_words(body.get("messages")))
        self.model = str(body.get("model") or "fake")
        self.id = f"chatcmpl-fake-{uuid.uuid4().hex[:16]}"

    def usage(self) -> dict[str, int] | None:
        if self.mode == "stream-no-usage":
            return None
        completion = len(self.words)
        if self.mode == "overrun":
            completion = (self.max_tokens or len(self.words)) + OVERRUN_EXTRA_TOKENS
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }

    def completion(self) -> dict[str, Any]:
        message = {"role": "assistant", "content": " ".join(self.words)}
        choices = [{"index": 0, "message": message, "finish_reason": self.finish_reason}]
        answer = self._envelope("chat.completion", choices)
        usage = self.usage()
        return answer | {"usage": usage} if usage is not None else answer

    def chunks(self) -> Iterator[str]:
        for index, word in enumerate(self.words):
            delta = (
                {"role": "assistant", "content": word} if index == 0 else {"content": " " + word}
            )
            yield _sse(self._choice_chunk(delta, None))
        yield _sse(self._choice_chunk({}, self.finish_reason))
        usage = self.usage()
        if self.include_usage and usage is not None:
            yield _sse(self._envelope("chat.completion.chunk", []) | {"usage": usage})
        yield "data: [DONE]\n\n"

    def _choice_chunk(self, delta: dict[str, str], finish: str | None) -> dict[str, Any]:
        choices = [{"index": 0, "delta": delta, "finish_reason": finish}]
        return self._envelope("chat.completion.chunk", choices)

    def _envelope(self, kind: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": kind,
            "created": 0,
            "model": self.model,
            "choices": choices,
        }


class _HangUp(Response):
    """Start a response, send part of it, and return without finishing: the connection drops."""

    def __init__(self, parts: Sequence[bytes], content_type: str, length: int | None) -> None:
        super().__init__()
        self.parts = parts
        self.content_type = content_type
        self.length = length

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", self.content_type.encode())]
        if self.length is not None:
            headers.append((b"content-length", str(self.length).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for part in self.parts:
            await send({"type": "http.response.body", "body": part, "more_body": True})


def _garbage(stream: bool) -> Response:
    if stream:
        body = "data: {this is not json\n\ndata: [DONE]\n\n"
        return Response(body, media_type="text/event-stream")
    return Response("<html>502 Bad Gateway, not JSON</html>", media_type="application/json")


def _error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": None}}, status)


def _count_words(messages: object) -> int:
    if not isinstance(messages, list):
        return 0
    return sum(len(_text(message).split()) for message in messages if isinstance(message, dict))


def _text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p["text"] for p in content if isinstance(p, dict) and "text" in p)
    return ""


def _sse(payload: Mapping[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


# --- running it ---------------------------------------------------------------------------------


@contextmanager
def run_fake_upstream(
    *,
    mode: str = "ok",
    slow_seconds: float = 5.0,
    chunk_delay: float = 0.0,
    log_level: str = "warning",
) -> Iterator[FakeUpstream]:
    """Serve a FakeUpstream on a free 127.0.0.1 port in a background thread until the block ends."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
    upstream = FakeUpstream(mode=mode, slow_seconds=slow_seconds, chunk_delay=chunk_delay)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        upstream.app(),
        log_config=None,  # leave the test process's logging alone
        log_level=log_level,
        lifespan="off",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"fake-upstream-{port}", daemon=True
    )
    thread.start()
    try:
        _wait_until_serving(server, thread, port)
        upstream.base_url = f"http://127.0.0.1:{port}/v1"
        yield upstream
    finally:
        upstream._stopping.set()
        server.should_exit = True
        thread.join(timeout=5)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout=5)
        sock.close()


def _wait_until_serving(server: uvicorn.Server, thread: threading.Thread, port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise RuntimeError("the fake upstream server stopped during startup")
        if server.started:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                pass
        time.sleep(0.01)
    server.should_exit = True
    raise RuntimeError(f"the fake upstream did not start on port {port} within 10 s")


# --- a catalogue file pointing at it --------------------------------------------------------------


def fake_environ(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment in which `write_catalogue`'s providers find their API key."""
    return {FAKE_API_KEY_ENV: FAKE_API_KEY, **(extra or {})}


def write_catalogue(
    path: Path,
    base_url: str,
    *,
    regions: Iterable[str] = ("us",),
    modes: Iterable[str] = MODES,
    prompt_price: str = "1.00",
    completion_price: str = "2.00",
    prices: Mapping[str, tuple[str, str]] | None = None,
    max_output_tokens: int = 256,
) -> Path:
    """Write a catalogue: one provider "fake-<region>" per region, all at `base_url`, and one
    model "fake/<mode>" per mode (upstream model "fake-<mode>") served by every provider.

    `prices` overrides (prompt, completion) credits per million for some modes.
    """
    regions = list(regions)
    lines: list[str] = []
    for region in regions:
        lines += [
            f"[providers.{_toml(f'fake-{region}')}]",
            f"base_url = {_toml(base_url)}",
            f"api_key_env = {_toml(FAKE_API_KEY_ENV)}",
            f"region = {_toml(region)}",
            "",
        ]
    for mode in modes:
        prompt, completion = (prices or {}).get(mode, (prompt_price, completion_price))
        providers = ", ".join(_toml(f"fake-{region}") for region in regions)
        lines += [
            f"[models.{_toml(f'fake/{mode}')}]",
            f"providers = [{providers}]",
            f"upstream_model = {_toml(f'fake-{mode}')}",
            f"prompt_price_per_million = {_toml(prompt)}",
            f"completion_price_per_million = {_toml(completion)}",
            f"max_output_tokens = {max_output_tokens}",
            "",
        ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _toml(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid TOML basic string
