"""A streamed answer whose writes to the client are bounded by the request's deadline.

A client that stops reading (its receive window full) blocks every write once the socket's and
the server's buffers are full; starlette's StreamingResponse would wait for it forever, with the
upstream stream, the hold and a connection held all that time. Here each write must be done by
the request's total deadline (`LOWROUTER_MAX_REQUEST_SECONDS` from its start, the event loop's
clock): past it, the body's generator is closed (its `finally` settles the call as a hang-up,
for what was delivered) and the response is left unfinished, so the server drops the
connection. A client that hangs up is still seen by StreamingResponse's disconnect listener.

Closing a generator that never started runs none of its `finally` (the response start timed
out, or the client left first): `cleanup` is run whatever happened, once the response is done,
for what the generator's own `finally` would have done (settle the call, close the upstream).

A write that completes without waiting (the transport not paused: nearly every chunk) arms no
timer: the send is stepped once by hand, and only a send that waits is resumed under
`asyncio.timeout_at(deadline)`. So a write done without waiting goes through even past the
deadline, and one that waits at the deadline, or starts waiting after it, is cut, as when every
write had its own timeout: a Timeout and a timer per chunk were most of this response's cost."""

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Mapping
from typing import Any

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

log = logging.getLogger("lowrouter.http")


class DeadlineStreamingResponse(StreamingResponse):
    def __init__(
        self,
        content: AsyncGenerator[bytes, None],
        deadline: float,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        cleanup: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(content, headers=headers, media_type=media_type)
        self.body_generator = content
        self.deadline = deadline
        self.cleanup = cleanup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self.cleanup is not None:
                with anyio.CancelScope(shield=True):
                    await self.cleanup()

    async def stream_response(self, send: Send) -> None:
        start = {"type": "http.response.start", "status": self.status_code}
        try:
            if not await self._sent_by_deadline(send, {**start, "headers": self.raw_headers}):
                return
            async for chunk in self.body_generator:
                body = {"type": "http.response.body", "body": chunk, "more_body": True}
                if not await self._sent_by_deadline(send, body):
                    return
            end = {"type": "http.response.body", "body": b"", "more_body": False}
            await self._sent_by_deadline(send, end)
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_generator.aclose()

    async def _sent_by_deadline(self, send: Send, message: dict[str, Any]) -> bool:
        steps = send(message).__await__()
        try:
            waiting_on = steps.send(None)  # what a send that waits yields to the task
        except StopIteration:
            return True  # done without waiting: no timer to arm
        try:
            async with asyncio.timeout_at(self.deadline):
                await _Resumed(steps, waiting_on)
        except TimeoutError:
            log.warning("the client stopped reading its stream: cut at the request's deadline")
            return False
        return True


class _Resumed:
    """The rest of an await whose first step was taken by hand (it yielded `waiting_on`): what
    `await` itself does (PEP 380's `yield from`), yields handed to the task and what the task
    sends or throws (its cancellation) handed back."""

    def __init__(self, steps: Generator[Any, None, None], waiting_on: Any) -> None:
        self.steps = steps
        self.waiting_on = waiting_on

    def __await__(self) -> Generator[Any, Any, None]:
        steps, yielded = self.steps, self.waiting_on
        self.waiting_on = None
        while True:
            try:
                sent = yield yielded
            except GeneratorExit:
                steps.close()
                raise
            except BaseException as exc:
                try:
                    yielded = steps.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    yielded = steps.send(sent)
                except StopIteration:
                    return
