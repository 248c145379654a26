"""Bounds on what a request may cost before anyone knows who sent it.

- `BodyLimitMiddleware`: every route's body is at most `max_bytes` (a declared Content-Length above
  it is refused before a byte is read; a chunked body is counted as it arrives) and must arrive
  within `timeout` seconds; both are checked before any handler parses anything.
- `parse_json`: JSON bodies are parsed off the event loop when large, and refused when nested
  deeper than MAX_JSON_DEPTH (orjson itself stops at 1,024 levels; our limit keeps every later
  walk over the body, and re-encoding it for the upstream, well inside Python's and orjson's).
- Duplicate `Authorization` headers are refused (400): which one wins is ambiguous.
"""

import asyncio
import math
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infrastructure.http.errors import ApiError

MAX_JSON_DEPTH = 64
OFF_LOOP_BYTES = 64 * 1024  # bodies larger than this are parsed in a worker thread


def too_large(limit: int) -> ApiError:
    return ApiError(
        413, "request_too_large", f"The request body is larger than the limit of {limit} bytes."
    )


def too_slow(timeout: float) -> ApiError:
    return ApiError(
        408, "request_timeout", f"The request body did not arrive within {timeout:g} seconds."
    )


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        authorizations, declared = 0, 0.0  # declared: math.inf for a length not a number
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorizations += 1
            elif name == b"content-length":
                declared = int(value) if value.isdigit() else math.inf
        if authorizations > 1:
            await ApiError(
                400, "duplicate_authorization", "Send exactly one Authorization header."
            ).response()(scope, receive, send)
            return
        if declared > self.max_bytes:
            await too_large(self.max_bytes).response()(scope, receive, send)
            return
        await self.app(scope, self._bounded(receive), send)

    def _bounded(self, receive: Receive) -> Receive:
        received, complete = 0, False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        limit, timeout = self.max_bytes, self.timeout

        async def bounded_receive() -> Message:
            nonlocal received, complete
            if complete:  # e.g. a streaming response waiting for the client to hang up
                return await receive()
            try:  # asyncio's timeout, not anyio's cancel scope: half the CPU per read
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise too_slow(timeout) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large(limit)
                complete = not message.get("more_body", False)
            return message

        return bounded_receive


def json_depth(value: Any) -> int:
    """How deeply containers nest in a parsed JSON value (a scalar is 0); iterative."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        if depth > deepest:
            deepest = depth
            if deepest > MAX_JSON_DEPTH:
                return deepest
        stack.extend((child, depth) for child in children)
    return deepest


def parse_json_bytes(raw: bytes) -> Any:
    """The parsed body, or a 400 (invalid, or nested deeper than MAX_JSON_DEPTH)."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        if "depth" in str(error):
            raise too_deep() from None
        raise ApiError(400, "invalid_json", "The request body is not valid JSON.") from None
    if json_depth(value) > MAX_JSON_DEPTH:
        raise too_deep()
    return value


def too_deep() -> ApiError:
    return ApiError(
        400,
        "json_too_deep",
        f"The request body nests deeper than {MAX_JSON_DEPTH} levels.",
    )


async def parse_json(raw: bytes) -> Any:
    """The parsed body, or a 400 (invalid, or nested too deep); off the loop when large."""
    if len(raw) > OFF_LOOP_BYTES:
        return await run_in_threadpool(parse_json_bytes, raw)
    return parse_json_bytes(raw)


def whole_number(text: str | None, max_digits: int = 18) -> int | None:
    """An ASCII decimal of at most `max_digits` digits (fits a 64-bit column), else None.
    `str.isdigit` alone accepts "²" and 5,000-digit strings, which `int()` then refuses."""
    if text is None or not text or len(text) > max_digits:
        return None
    if not (text.isascii() and text.isdigit()):
        return None
    return int(text)
