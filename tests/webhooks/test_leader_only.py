"""The deliverer works only while its process leads the background work (one per database),
as the reconciler and the chain do; a standby process's deliverer sends nothing."""

import asyncio

from infrastructure.runtime import Runtime
from infrastructure.webhooks.wiring import deliverer_for
from tests.support.webhook_receiver import Receiver
from tests.support.webhooks import open_account


def test_a_standby_process_delivers_nothing_and_the_leader_delivers(
    local_runtime: Runtime, receiver: Receiver
) -> None:
    runtime = local_runtime
    account = open_account(runtime)
    account.subscribe(receiver.url, ["key.created"])
    account.new_key()
    runtime.projections.catch_up()
    deliverer = deliverer_for(runtime)  # as the background process wires it

    async def one_pass() -> int:
        async with deliverer.session() as session:
            started = await deliverer.deliver_pass(session)
            await deliverer.wait_idle()
            return started

    runtime.projections.leading = False  # another process leads
    assert asyncio.run(one_pass()) == 0
    assert receiver.received == []
    runtime.projections.leading = True  # this one took over
    assert asyncio.run(one_pass()) == 1
    assert [r.headers["webhook-id"] for r in receiver.wait_for(1)]
