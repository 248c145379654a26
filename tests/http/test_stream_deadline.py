"""A streamed answer's writes against the request's deadline: a write done without waiting goes
through whenever it happens, and arms no timer; one still waiting at the deadline, or starting
to wait after it, is cut (the relay closed, the cleanup run); and the cut leaves no
cancellation behind, whichever way its races go."""

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, MutableMapping
from typing import Any

import pytest

from infrastructure.http.streaming import DeadlineStreamingResponse

CUT = "the client stopped reading its stream"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["2.3", "2.4"])
def spec(request: pytest.FixtureRequest) -> str:
    """Under 2.3 (uvicorn's) starlette writes from a task of its own beside a disconnect
    listener; under 2.4 from the caller's task, where a cancellation left behind shows."""
    return str(request.param)


class Stream:
    """A response over a relay of `chunks` chunks, and what happened to it."""

    def __init__(self, chunks: int, deadline: float, spec: str = "2.3") -> None:
        self.scope = {"type": "http", "asgi": {"spec_version": spec}}
        self.done: list[str] = []
        self.sent: list[bytes | str] = []  # the bodies sent, "start" for the response start

        async def relay() -> AsyncGenerator[bytes, None]:
            try:
                for n in range(chunks):
                    yield b"%d" % n
            finally:
                self.done.append("relay finally")

        async def cleanup() -> None:
            self.done.append("cleanup")

        self.response = DeadlineStreamingResponse(
            relay(), deadline, media_type="text/event-stream", cleanup=cleanup
        )

    async def run(
        self, write: Callable[[bytes | str], Awaitable[None]], receive: Any = None
    ) -> None:
        async def send(message: MutableMapping[str, Any]) -> None:
            what = message.get("body", "start")
            await write(what)
            self.sent.append(what)

        async def never_disconnects() -> dict[str, Any]:
            await asyncio.sleep(30)
            return {"type": "http.disconnect"}

        async with asyncio.timeout(5):  # in this task (wait_for would make one)
            await self.response(self.scope, receive or never_disconnects, send)


async def no_wait(what: bytes | str) -> None:
    return None


def assert_no_cancellation_left() -> None:
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


@pytest.mark.anyio
async def test_writes_done_without_waiting_go_through_past_the_deadline(spec: str) -> None:
    loop = asyncio.get_running_loop()
    stream = Stream(chunks=50, deadline=loop.time() - 1, spec=spec)  # long past

    await stream.run(no_wait)
    assert stream.sent == ["start", *(b"%d" % n for n in range(50)), b""]
    assert stream.done == ["relay finally", "cleanup"]


@pytest.mark.anyio
async def test_writes_done_without_waiting_arm_no_timer_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    stream = Stream(chunks=50, deadline=loop.time() + 60)
    at_the_deadline: list[float] = []
    call_at = loop.call_at

    def counted_call_at(when: float, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        if when == stream.response.deadline:
            at_the_deadline.append(when)
        return call_at(when, *args, **kwargs)

    monkeypatch.setattr(loop, "call_at", counted_call_at)
    await stream.run(no_wait)
    assert stream.sent == ["start", *(b"%d" % n for n in range(50)), b""]
    assert len(at_the_deadline) <= 1  # one for the response at most, not one per write


@pytest.mark.anyio
async def test_a_write_that_starts_waiting_after_the_deadline_is_cut(
    caplog: pytest.LogCaptureFixture, spec: str
) -> None:
    loop = asyncio.get_running_loop()
    stream = Stream(chunks=5, deadline=loop.time() - 1, spec=spec)

    async def write(what: bytes | str) -> None:
        if what == b"2":
            await asyncio.sleep(30)  # the client's window is full from here on

    with caplog.at_level(logging.WARNING, "lowrouter.http"):
        await stream.run(write)
    assert stream.sent == ["start", b"0", b"1"]  # the end never sent: the connection is dropped
    assert stream.done == ["relay finally", "cleanup"]
    assert CUT in caplog.text
    assert_no_cancellation_left()


@pytest.mark.anyio
async def test_a_write_still_waiting_at_the_deadline_is_cut_and_one_done_before_goes_through(
    caplog: pytest.LogCaptureFixture, spec: str
) -> None:
    loop = asyncio.get_running_loop()
    stream = Stream(chunks=5, deadline=loop.time() + 0.2, spec=spec)
    drained = loop.create_future()
    loop.call_at(stream.response.deadline - 0.15, drained.set_result, None)

    async def write(what: bytes | str) -> None:
        if what == b"1":
            await drained  # waits, and is done well before the deadline
        if what == b"3":
            await asyncio.sleep(30)  # waits past it

    with caplog.at_level(logging.WARNING, "lowrouter.http"):
        await stream.run(write)
    assert stream.sent == ["start", b"0", b"1", b"2"]
    assert stream.done == ["relay finally", "cleanup"]
    assert loop.time() >= stream.response.deadline
    assert caplog.text.count(CUT) == 1
    assert_no_cancellation_left()


@pytest.mark.anyio
async def test_a_write_whose_wait_ends_in_the_deadlines_loop_turn_is_cut_once(spec: str) -> None:
    """The wait ends (its future resolved) and then, before the task resumes, the deadline asks
    for the cancellation: the write was still waiting at the deadline, so it is cut, the
    cancellation delivered and counted once, none left pending for the caller."""
    loop = asyncio.get_running_loop()
    stream = Stream(chunks=5, deadline=loop.time() + 0.1, spec=spec)
    drained = loop.create_future()

    def hold_the_loop_past_the_deadline() -> None:
        # both timers below are due in the same turn, the resolving one first (earlier time)
        time.sleep(max(0.0, stream.response.deadline - loop.time()) + 0.02)

    async def write(what: bytes | str) -> None:
        if what == b"1":
            loop.call_at(stream.response.deadline - 0.05, drained.set_result, None)
            loop.call_soon(hold_the_loop_past_the_deadline)
            await drained

    await stream.run(write)
    assert drained.done() and not drained.cancelled()  # the wait had ended
    assert stream.sent == ["start", b"0"]  # and still it was cut
    assert stream.done == ["relay finally", "cleanup"]
    assert_no_cancellation_left()
    await asyncio.sleep(0.01)  # no cancellation pending either


@pytest.mark.anyio
async def test_a_write_that_completes_after_the_cut_was_asked_for_goes_through_cleanly(
    spec: str,
) -> None:
    """A send that takes the cancellation and finishes its write anyway has delivered: nothing
    is cut, and the cancellation it took is not left for the relay or the caller to meet."""
    loop = asyncio.get_running_loop()
    stream = Stream(chunks=3, deadline=loop.time() + 0.05, spec=spec)
    took: list[bytes | str] = []

    async def write(what: bytes | str) -> None:
        if what in (b"0", b"2"):
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                took.append(what)  # the write is finished all the same

    await stream.run(write)
    assert took == [b"0", b"2"]
    assert stream.sent == ["start", b"0", b"1", b"2", b""]
    assert stream.done == ["relay finally", "cleanup"]
    assert_no_cancellation_left()
    await asyncio.sleep(0.01)


@pytest.mark.anyio
async def test_a_client_that_hangs_up_during_a_write_ends_the_stream_and_the_deadline_with_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    stream = Stream(chunks=5, deadline=loop.time() + 0.1)
    waiting = asyncio.Event()

    async def write(what: bytes | str) -> None:
        if what == b"1":
            waiting.set()
            await asyncio.sleep(30)

    async def receive() -> dict[str, Any]:
        await waiting.wait()  # the client hangs up while a write waits
        return {"type": "http.disconnect"}

    with caplog.at_level(logging.WARNING, "lowrouter.http"):
        await stream.run(write, receive)
        assert loop.time() < stream.response.deadline
        await asyncio.sleep(0.15)  # past the deadline: nothing is left to fire at this task
    assert stream.sent == ["start", b"0"]
    assert stream.done == ["relay finally", "cleanup"]
    assert CUT not in caplog.text  # a hang-up, not a cut
    assert_no_cancellation_left()
