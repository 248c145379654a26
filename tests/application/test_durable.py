"""durable(): waiting on the loop for another thread's command, with or without a time limit,
never cancelling the command itself."""

import asyncio
import threading
from concurrent.futures import Future

import pytest

from application.durable import durable


def test_an_outcome_from_another_thread_is_handed_to_the_loop() -> None:
    async def main() -> int:
        future: Future[int] = Future()
        threading.Timer(0.01, future.set_result, (7,)).start()
        return await durable(future, within=5.0)

    assert asyncio.run(main()) == 7


def test_an_error_from_another_thread_is_raised_on_the_loop() -> None:
    async def main() -> None:
        future: Future[int] = Future()
        threading.Timer(0.01, future.set_exception, (ValueError("nope"),)).start()
        await durable(future, within=5.0)

    with pytest.raises(ValueError, match="nope"):
        asyncio.run(main())


def test_a_command_slower_than_the_limit_times_out_and_is_not_cancelled() -> None:
    future: Future[int] = Future()

    async def main() -> None:
        await durable(future, within=0.02)

    with pytest.raises(TimeoutError):
        asyncio.run(main())
    assert not future.cancelled()
    future.set_result(1)  # the writer finishes later: nobody waits, nothing breaks


def test_a_cancelled_waiter_leaves_the_command_running() -> None:
    future: Future[int] = Future()

    async def main() -> None:
        waiting = asyncio.ensure_future(durable(future, within=5.0))
        await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(main())
    assert not future.cancelled()
