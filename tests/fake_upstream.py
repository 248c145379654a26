"""A fake upstream on a real uvicorn server, for tests of the gateway. It speaks both dialects:
OpenAI's (chat completions, legacy completions, Responses, embeddings) and Anthropic's
(Messages), streaming and not, with tool use and cached-token usage.

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
- hangup           closes the connection mid-response (streaming: after `hangup_after` chunks,
                   three unless a test changes it; 0: before any).
- overrun          like ok, but usage reports 100 more completion tokens than max_tokens allowed.
- truncate         streams three chunks, then ends cleanly without usage or [DONE]
                   (non-streaming: like hangup).
- drip             streams two chunks, then only SSE comments (`: keep-alive`) every 50 ms for
                   `slow_seconds`, then finishes like ok (non-streaming: slow).
- huge             streams one chunk, then one `data:` line of `huge_bytes` bytes, then finishes
                   (non-streaming: like ok, padded to more than `huge_bytes`).
- endless          (chat, streaming) content chunks of 1 KB, one after another, until the client
                   goes or the fake stops: it never ends by itself (non-streaming: like ok).
- cached           like ok, but CACHE_READ of the prompt tokens were read from the cache and
                   CACHE_WRITE written to it (Anthropic; each at most what the prompt has),
                   REASONING_TOKENS more
                   completion tokens counted as reasoning, and the upstream's own `usage.cost`
                   (UPSTREAM_COST).

Tool use: a request offering tools whose conversation does not end with a tool result is
answered with one call of the first tool, arguments TOOL_ARGUMENTS; after the result, in text.

Prompt tokens are the whitespace-separated words of every text of the request (at least 1).
"""

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests.support.servers import LiveServer

MODES = (
    "ok",
    "stream-no-usage",
    "slow",
    "stall",
    "error500",
    "garbage",
    "hangup",
    "overrun",
    "cached",
    "truncate",
    "drip",
    "endless",
    "huge",
)
REPLY_WORDS = ("Hello", "from", "the", "fake", "upstream")
OVERRUN_EXTRA_TOKENS = 100
CACHE_READ = 800  # the "cached" mode's prompt tokens read from the cache …
CACHE_WRITE = 150  # … and (Anthropic) written to it
REASONING_TOKENS = 7
UPSTREAM_COST = "0.0001234"
TOOL_ARGUMENTS = {"location": "Paris", "unit": "celsius"}
EMBEDDING_DIMENSIONS = 4
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
    huge_bytes: int = 1024 * 1024  # the "huge" mode's one long line
    hangup_after: int = 3  # the streamed chunks the "hangup" mode sends before it drops
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
        routes = [
            Route(f"/v1/{path}", self._handler(kind), methods=["POST"])
            for path, kind in (
                ("chat/completions", "chat"),
                ("completions", "completions"),
                ("responses", "responses"),
                ("embeddings", "embeddings"),
                ("messages", "messages"),
            )
        ]
        return Starlette(routes=[*routes, Route("/v1/models", self._models, methods=["GET"])])

    # --- handlers -----------------------------------------------------------------------------

    async def _models(self, request: Request) -> Response:
        self._record(request, None)
        data = [{"id": f"fake-{mode}", "object": "model", "owned_by": "fake"} for mode in MODES]
        return JSONResponse({"object": "list", "data": data})

    def _handler(self, kind: str) -> Any:
        async def handle(request: Request) -> Response:
            return await self._serve(request, kind)

        return handle

    async def _serve(self, request: Request, kind: str) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        self._record(request, body)
        if not isinstance(body, dict):
            return _error(kind, 400, "invalid_request_error", "the body is not a JSON object")
        if kind == "messages" and not isinstance(body.get("max_tokens"), int):
            return _error(kind, 400, "invalid_request_error", "max_tokens: Field required")
        answer = _Answer(body, self.mode_for(body.get("model")), kind)
        slow_modes = ("stall", "drip")
        if answer.mode == "slow" or (answer.mode in slow_modes and not answer.stream):
            await self._sleep(self.slow_seconds)
        if answer.mode == "error500":
            return _error(kind, 500, "server_error", "the fake upstream failed (error500)")
        if answer.mode == "garbage":
            return _garbage(answer.stream)
        if answer.mode == "truncate" and answer.stream:
            chunks = [chunk.encode() for chunk in answer.chunks()][:3]
            return Response(b"".join(chunks), media_type="text/event-stream")
        if answer.mode == "hangup" and answer.stream:
            chunks = [chunk.encode() for chunk in answer.chunks()][: self.hangup_after]
            return _HangUp(chunks, "text/event-stream", None)
        if answer.mode in ("hangup", "truncate"):
            full = json.dumps(answer.completion()).encode()
            return _HangUp([full[: len(full) // 2]], "application/json", len(full))
        if answer.stream:
            return StreamingResponse(self._stream(answer), media_type="text/event-stream")
        if answer.mode == "huge":
            return JSONResponse({**answer.completion(), "padding": "x" * self.huge_bytes})
        return JSONResponse(answer.completion())

    async def _stream(self, answer: "_Answer") -> AsyncIterator[str]:
        if answer.mode == "endless":
            chunk = _sse(answer._choice_chunk("chat.completion.chunk", {"content": "x " * 512}))
            while not self._stopping.is_set():
                yield chunk
                await asyncio.sleep(0)
            return
        for index, chunk in enumerate(answer.chunks()):
            if index and self.chunk_delay:
                await self._sleep(self.chunk_delay)
            if answer.mode == "stall" and index == 2:
                await self._sleep(self.slow_seconds)
            if answer.mode == "drip" and index == 2:
                deadline = time.monotonic() + self.slow_seconds
                while time.monotonic() < deadline and not self._stopping.is_set():
                    yield ": keep-alive\n\n"
                    await asyncio.sleep(0.05)
            if answer.mode == "huge" and index == 1:
                yield "data: " + "x" * self.huge_bytes + "\n\n"
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
    """One answer of the fake, in the shape of the API asked (`kind`)."""

    def __init__(self, body: Mapping[str, Any], mode: str, kind: str) -> None:
        self.mode, self.kind = mode, kind
        self.stream = body.get("stream") is True
        options = body.get("stream_options")
        self.include_usage = isinstance(options, dict) and options.get("include_usage") is True
        names = ("max_tokens", "max_completion_tokens", "max_output_tokens")
        max_tokens = next((body[n] for n in names if body.get(n) is not None), None)
        self.max_tokens = max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else None
        self.words = list(REPLY_WORDS[: self.max_tokens])
        self.finish_reason = "length" if len(self.words) < len(REPLY_WORDS) else "stop"
        self.prompt_tokens = max(1, _count_words(_prompt_of(body, kind)))
        self.model = str(body.get("model") or "fake")
        self.id = f"fake-{uuid.uuid4().hex[:16]}"
        self.inputs = _embedding_inputs(body.get("input")) if kind == "embeddings" else []
        self.tool = _tool_to_call(body, kind)
        if self.tool is not None:
            self.finish_reason = "tool_calls"

    @property
    def arguments(self) -> str:
        return json.dumps(TOOL_ARGUMENTS)

    @property
    def text(self) -> str:
        return " ".join(self.words)

    def counts(self) -> dict[str, int] | None:
        """prompt, completion, cached, writes, reasoning — or None (no usage)."""
        if self.mode == "stream-no-usage":
            return None
        completion = len(self.words) if self.tool is None else len(self.arguments) // 4
        if self.mode == "overrun":
            completion = (self.max_tokens or len(self.words)) + OVERRUN_EXTRA_TOKENS
        counts = {"prompt": self.prompt_tokens, "completion": completion}
        counts |= {"cached": 0, "writes": 0, "reasoning": 0}
        if self.mode == "cached":
            counts["cached"] = min(CACHE_READ, counts["prompt"])
            writes = CACHE_WRITE if self.kind == "messages" else 0
            counts["writes"] = min(writes, counts["prompt"] - counts["cached"])
            counts["completion"] += REASONING_TOKENS
            counts["reasoning"] = REASONING_TOKENS
        return counts

    def usage(self) -> dict[str, Any] | None:
        counts = self.counts()
        if counts is None:
            return None
        prompt, completion = counts["prompt"], counts["completion"]
        if self.kind == "messages":
            usage: dict[str, Any] = {
                "input_tokens": prompt - counts["cached"] - counts["writes"],
                "output_tokens": completion,
                "cache_read_input_tokens": counts["cached"],
                "cache_creation_input_tokens": counts["writes"],
            }
        elif self.kind == "responses":
            usage = {
                "input_tokens": prompt,
                "output_tokens": completion,
                "total_tokens": prompt + completion,
                "input_tokens_details": {"cached_tokens": counts["cached"]},
                "output_tokens_details": {"reasoning_tokens": counts["reasoning"]},
            }
        elif self.kind == "embeddings":
            usage = {"prompt_tokens": prompt, "total_tokens": prompt}
        else:
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
            if self.mode == "cached":
                usage["prompt_tokens_details"] = {"cached_tokens": counts["cached"]}
                usage["completion_tokens_details"] = {"reasoning_tokens": counts["reasoning"]}
        if self.mode == "cached":
            usage["cost"] = float(UPSTREAM_COST)
        return usage

    def completion(self) -> dict[str, Any]:
        answer = {
            "chat": self._chat,
            "completions": self._text_completion,
            "responses": self._response,
            "embeddings": self._embeddings,
            "messages": self._message,
        }[self.kind]()
        usage = self.usage()
        if self.kind == "responses":
            return answer | {"usage": usage}
        return answer | {"usage": usage} if usage is not None else answer

    def chunks(self) -> Iterator[str]:
        if self.kind == "messages":
            yield from self._message_events()
        elif self.kind == "responses":
            yield from self._response_events()
        else:
            yield from self._chat_chunks()

    # --- chat completions and legacy completions -----------------------------------------

    def _chat(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.text}
        if self.tool is not None:
            message = {"role": "assistant", "content": None, "tool_calls": [self._tool_call()]}
        choices = [{"index": 0, "message": message, "finish_reason": self.finish_reason}]
        return self._envelope("chat.completion", choices)

    def _text_completion(self) -> dict[str, Any]:
        choice = {"index": 0, "text": self.text, "finish_reason": self.finish_reason}
        return self._envelope("text_completion", [choice])

    def _tool_call(self) -> dict[str, Any]:
        function = {"name": self.tool, "arguments": self.arguments}
        return {"id": f"call_{self.id}", "type": "function", "function": function}

    def _chat_chunks(self) -> Iterator[str]:
        kind = "text_completion" if self.kind == "completions" else "chat.completion.chunk"
        if self.tool is not None:
            call = self._tool_call()
            first = {"index": 0, **call, "function": {"name": self.tool, "arguments": ""}}
            yield _sse(self._choice_chunk(kind, {"role": "assistant", "tool_calls": [first]}))
            half = len(self.arguments) // 2
            for part in (self.arguments[:half], self.arguments[half:]):
                delta = {"tool_calls": [{"index": 0, "function": {"arguments": part}}]}
                yield _sse(self._choice_chunk(kind, delta))
        for index, word in enumerate(self.words if self.tool is None else []):
            text = word if index == 0 else " " + word
            if self.kind == "completions":
                choice = {"index": 0, "text": text, "finish_reason": None}
                yield _sse(self._envelope(kind, [choice]))
                continue
            delta = {"role": "assistant", "content": text} if index == 0 else {"content": text}
            yield _sse(self._choice_chunk(kind, delta))
        if self.kind == "completions":
            choice = {"index": 0, "text": "", "finish_reason": self.finish_reason}
            yield _sse(self._envelope(kind, [choice]))
        else:
            yield _sse(self._choice_chunk(kind, {}, self.finish_reason))
        usage = self.usage()
        if self.include_usage and usage is not None:
            yield _sse(self._envelope(kind, []) | {"usage": usage})
        yield "data: [DONE]\n\n"

    def _choice_chunk(
        self, kind: str, delta: dict[str, Any], finish: str | None = None
    ) -> dict[str, Any]:
        choices = [{"index": 0, "delta": delta, "finish_reason": finish}]
        return self._envelope(kind, choices)

    def _envelope(self, kind: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{self.id}",
            "object": kind,
            "created": 0,
            "model": self.model,
            "choices": choices,
        }

    # --- embeddings ---------------------------------------------------------------------

    def _embeddings(self) -> dict[str, Any]:
        data = [
            {"object": "embedding", "index": i, "embedding": _vector(text)}
            for i, text in enumerate(self.inputs)
        ]
        return {"object": "list", "data": data, "model": self.model}

    # --- Responses ----------------------------------------------------------------------

    def _output_item(self, done: bool = True) -> dict[str, Any]:
        if self.tool is not None:
            return {
                "type": "function_call",
                "id": f"fc_{self.id}",
                "call_id": f"call_{self.id}",
                "name": self.tool,
                "arguments": self.arguments if done else "",
                "status": "completed" if done else "in_progress",
            }
        part = {"type": "output_text", "text": self.text, "annotations": []}
        return {
            "type": "message",
            "id": f"msg_{self.id}",
            "status": "completed" if done else "in_progress",
            "role": "assistant",
            "content": [part] if done else [],
        }

    def _response(self, done: bool = True) -> dict[str, Any]:
        return {
            "id": f"resp_{self.id}",
            "object": "response",
            "created_at": 0,
            "status": "completed" if done else "in_progress",
            "model": self.model,
            "output": [self._output_item()] if done else [],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": None,
        }

    def _response_events(self) -> Iterator[str]:
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": self._response(done=False)},
            {"type": "response.in_progress", "response": self._response(done=False)},
        ]
        item, where = self._output_item(done=False), {"output_index": 0}
        events.append({"type": "response.output_item.added", **where, "item": item})
        if self.tool is not None:
            for part in (self.arguments[:10], self.arguments[10:]):
                events.append(
                    {
                        "type": "response.function_call_arguments.delta",
                        "item_id": item["id"],
                        **where,
                        "delta": part,
                    }
                )
            events.append(
                {
                    "type": "response.function_call_arguments.done",
                    "item_id": item["id"],
                    **where,
                    "arguments": self.arguments,
                }
            )
        else:
            at = {"item_id": item["id"], **where, "content_index": 0}
            empty = {"type": "output_text", "text": "", "annotations": []}
            events.append({"type": "response.content_part.added", **at, "part": empty})
            for index, word in enumerate(self.words):
                delta = word if index == 0 else " " + word
                events.append({"type": "response.output_text.delta", **at, "delta": delta})
            events.append({"type": "response.output_text.done", **at, "text": self.text})
            full = {"type": "output_text", "text": self.text, "annotations": []}
            events.append({"type": "response.content_part.done", **at, "part": full})
        events.append({"type": "response.output_item.done", **where, "item": self._output_item()})
        final = self._response() | {"usage": self.usage()}
        events.append({"type": "response.completed", "response": final})
        for number, event in enumerate(events):
            yield _typed_sse(event | {"sequence_number": number})

    # --- Anthropic Messages -------------------------------------------------------------

    def _content(self) -> list[dict[str, Any]]:
        if self.tool is not None:
            return [
                {
                    "type": "tool_use",
                    "id": f"toolu_{self.id}",
                    "name": self.tool,
                    "input": TOOL_ARGUMENTS,
                }
            ]
        return [{"type": "text", "text": self.text}]

    @property
    def stop_reason(self) -> str:
        return {"length": "max_tokens", "tool_calls": "tool_use"}.get(
            self.finish_reason, "end_turn"
        )

    def _message(self) -> dict[str, Any]:
        return {
            "id": f"msg_{self.id}",
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": self._content(),
            "stop_reason": self.stop_reason,
            "stop_sequence": None,
        }

    def _message_events(self) -> Iterator[str]:
        usage = self.usage() or {}
        start_usage = {k: v for k, v in usage.items() if k != "output_tokens"} | {
            "output_tokens": 1
        }
        start = self._message() | {"content": [], "stop_reason": None, "usage": start_usage}
        yield _typed_sse({"type": "message_start", "message": start})
        yield _typed_sse({"type": "ping"})
        if self.tool is not None:
            block = self._content()[0] | {"input": {}}
            yield _typed_sse({"type": "content_block_start", "index": 0, "content_block": block})
            for part in (self.arguments[:10], self.arguments[10:]):
                delta = {"type": "input_json_delta", "partial_json": part}
                yield _typed_sse({"type": "content_block_delta", "index": 0, "delta": delta})
        else:
            block = {"type": "text", "text": ""}
            yield _typed_sse({"type": "content_block_start", "index": 0, "content_block": block})
            for index, word in enumerate(self.words):
                delta = {"type": "text_delta", "text": word if index == 0 else " " + word}
                yield _typed_sse({"type": "content_block_delta", "index": 0, "delta": delta})
        yield _typed_sse({"type": "content_block_stop", "index": 0})
        delta = {"stop_reason": self.stop_reason, "stop_sequence": None}
        end: dict[str, Any] = {"type": "message_delta", "delta": delta}
        if usage:
            end["usage"] = {"output_tokens": usage["output_tokens"]}
        yield _typed_sse(end)
        yield _typed_sse({"type": "message_stop"})


def _prompt_of(body: Mapping[str, Any], kind: str) -> Any:
    """The parts of a request whose words are its prompt tokens."""
    fields = {
        "chat": ("messages",),
        "completions": ("prompt",),
        "responses": ("instructions", "input"),
        "embeddings": ("input",),
        "messages": ("system", "messages"),
    }[kind]
    return [body.get(name) for name in fields]


def _tool_to_call(body: Mapping[str, Any], kind: str) -> str | None:
    """The first offered tool's name, unless the conversation ends with a tool result."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools or not isinstance(tools[0], dict):
        return None
    first = tools[0]
    name = first.get("name") or (first.get("function") or {}).get("name")
    if kind == "chat":
        last = (body.get("messages") or [{}])[-1]
        answered = isinstance(last, dict) and last.get("role") == "tool"
    elif kind == "messages":
        last = (body.get("messages") or [{}])[-1]
        content = last.get("content") if isinstance(last, dict) else None
        answered = isinstance(content, list) and any(
            isinstance(b, dict) and b.get("type") == "tool_result" for b in content
        )
    elif kind == "responses":
        items = body.get("input")
        answered = isinstance(items, list) and any(
            isinstance(i, dict) and i.get("type") == "function_call_output" for i in items
        )
    else:
        return None
    return None if answered else str(name)


def _embedding_inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v if isinstance(v, str) else json.dumps(v) for v in value]
    return []


def _vector(text: str) -> list[float]:
    """A deterministic little vector per text."""
    seed = sum(text.encode()) or 1
    return [((seed * (i + 3)) % 97) / 97 for i in range(EMBEDDING_DIMENSIONS)]


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


def _error(kind: str, status: int, error_type: str, message: str) -> JSONResponse:
    if kind == "messages":  # Anthropic's shape
        body = {"type": "error", "error": {"type": error_type, "message": message}}
        return JSONResponse(body, status)
    return JSONResponse({"error": {"message": message, "type": error_type, "code": None}}, status)


def _count_words(value: Any) -> int:
    """Whitespace-separated words of every string in a JSON-like value (keys excluded, and
    the `type`, `role`, ids and tool names, which are structure, not text)."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_count_words(v) for v in value)
    if isinstance(value, dict):
        skipped = {"type", "role", "id", "tool_use_id", "tool_call_id", "call_id", "name"}
        return sum(_count_words(v) for k, v in value.items() if k not in skipped)
    return 0


def _sse(payload: Mapping[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def _typed_sse(payload: Mapping[str, Any]) -> str:
    data = json.dumps(payload, separators=(",", ":"))
    return f"event: {payload['type']}\ndata: {data}\n\n"


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
    server = LiveServer(
        upstream.app(),
        name="fake-upstream",
        log_level=log_level,
        lifespan="off",
        timeout_graceful_shutdown=2,
    )
    upstream.base_url = server.start(timeout=10) + "/v1"
    try:
        yield upstream
    finally:
        upstream._stopping.set()
        server.stop()


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
