"""Waiting on the event loop for a command another thread completes (the ledger writer)."""

import asyncio
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")


async def durable(future: "Future[T]", within: float | None = None) -> T:
    """Wait for a ledger command (or a lookup) without ever cancelling it: a client that hangs up
    must not stop a reservation or a settlement half way (the writer completes it either way).

    What asyncio.shield(asyncio.wrap_future(f)) does, with one loop future instead of three: the
    thread that resolves `future` hands its outcome to the loop; cancelling the waiting task
    cancels only the waiter.

    `within` seconds: raise TimeoutError after that long (the command itself goes on). What
    asyncio.wait_for(durable(f), within) did, without the Task that wait_for wraps a coroutine
    in on Python 3.11 (three a request on the hot path: the lookup, the hold, the settlement).
    """
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[T] = loop.create_future()

    def from_the_writer(done: "Future[T]") -> None:
        if not loop.is_closed():  # the server has already stopped: nobody to tell
            loop.call_soon_threadsafe(_hand_over, done, waiter)

    future.add_done_callback(from_the_writer)
    if within is None:
        return await waiter
    timer = loop.call_later(max(within, 0.0), _time_out, waiter)
    try:
        return await waiter
    finally:
        timer.cancel()


def _hand_over(done: "Future[T]", waiter: "asyncio.Future[T]") -> None:
    if waiter.done():  # the waiting task was cancelled, or gave up waiting: nobody to tell
        return
    if done.cancelled():
        waiter.cancel()
    elif (error := done.exception()) is not None:
        waiter.set_exception(error)
    else:
        waiter.set_result(done.result())


def _time_out(waiter: "asyncio.Future[T]") -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())
