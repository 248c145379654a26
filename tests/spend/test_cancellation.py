"""A client that hangs up while its ledger command is being written must not cancel that command
or fail the other requests batched with it."""

import asyncio
import uuid

from domain.actor import Actor
from domain.scope import Scope
from infrastructure.http.gateway import durable
from infrastructure.runtime import open_runtime
from infrastructure.settings import Settings

OPERATOR = Actor("operator", "test")


def test_cancelled_waiters_neither_cancel_their_holds_nor_fail_the_batch(
    settings: Settings,
) -> None:
    runtime = open_runtime(settings)
    try:
        account = runtime.app.open_account("hangups", OPERATOR, credits=10**9).account
        key = runtime.app.create_key(account.id, "k", Scope(), OPERATOR).key
        requests = [f"req-{uuid.uuid4().hex}" for _ in range(60)]

        async def scenario() -> list[object]:
            tasks = [
                asyncio.create_task(
                    durable(runtime.spend.reserve(account.id, r, key.id, "m", 1000, None))
                )
                for r in requests
            ]
            await asyncio.sleep(0)
            for task in tasks[::2]:
                task.cancel()  # half the clients hang up while their holds are being written
            return await asyncio.gather(*tasks, return_exceptions=True)

        outcomes = asyncio.run(scenario())
        kept = outcomes[1::2]
        assert all(isinstance(day, str) for day in kept), kept
        assert all(isinstance(o, asyncio.CancelledError) for o in outcomes[::2])
        view = runtime.spend.view(account.id).result()
        # Every reservation was written, the cancelled ones included (the writer finished them).
        assert view.held == 1000 * len(requests)
    finally:
        runtime.close()
