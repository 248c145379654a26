"""Waiting on the event loop for a command another thread completes (the ledger writer)."""

import asyncio
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")


async def durable(future: "Future[T]") -> T:
    """Wait for a ledger command (or a lookup) without ever cancelling it: a client that hangs up
    must not stop a reservation or a settlement half way (the writer completes it either way).

    What asyncio.shield(asyncio.wrap_future(f)) does, with one loop future instead of three: the
    thread that resolves `future` hands its outcome to the loop; cancelling the waiting task
    cancels only the waiter.
    """
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[T] = loop.create_future()

    def from_the_writer(done: "Future[T]") -> None:
        if not loop.is_closed():  # the server has already stopped: nobody to tell
            loop.call_soon_threadsafe(_hand_over, done, waiter)

    future.add_done_callback(from_the_writer)
    return await waiter


def _hand_over(done: "Future[T]", waiter: "asyncio.Future[T]") -> None:
    if waiter.done():  # the waiting task was cancelled: nobody to tell
        return
    if done.cancelled():
        waiter.cancel()
    elif (error := done.exception()) is not None:
        waiter.set_exception(error)
    else:
        waiter.set_result(done.result())
