"""Webhook test helpers: running the deliverer a pass at a time, accounts that subscribe and
issue keys, one completion's spend on the ledger, and a subscriber that reads what a receiver
was sent."""

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import orjson

from domain.actor import Actor
from domain.scope import Scope
from domain.usage import Usage
from infrastructure.runtime import Runtime
from infrastructure.webhooks.deliverer import Deliverer, DeliveryConfig
from infrastructure.webhooks.wiring import vault
from tests.support.webhook_receiver import Receiver

OPERATOR = Actor("operator", "cli:test")
SHORT_SCHEDULE = (0.0, 0.0, 0.0)  # retries at once: the tests drive the passes


def make_deliverer(runtime: Runtime, now_us: Any = None, **config: Any) -> Deliverer:
    options: dict[str, Any] = {"schedule": SHORT_SCHEDULE, "allow_private": True, "timeout": 2.0}
    options.update(config)
    clock = {"now_us": now_us} if now_us is not None else {}
    return Deliverer(runtime.engine, vault(runtime), DeliveryConfig(**options), **clock)


def deliver(runtime: Runtime, deliverer: Deliverer, passes: int = 1) -> int:
    """Bring the outbox up to date, then run the deliverer `passes` times to the end of each."""
    runtime.projections.catch_up()

    async def run() -> int:
        started = 0
        async with deliverer.session() as session:
            for _ in range(passes):
                started += await deliverer.send_due(session)
                await deliverer.wait_idle()
        return started

    return asyncio.run(run())


@dataclass
class Account:
    id: UUID
    runtime: Runtime

    def subscribe(self, url: str, events: list[str]) -> tuple[UUID, str]:
        added = self.runtime.webhooks.add(self.id, url, events, OPERATOR)
        return added.endpoint.id, added.secret

    def new_key(self, name: str = "prod", scope: Scope | None = None) -> tuple[UUID, str]:
        issued = self.runtime.app.create_key(self.id, name, scope or Scope(), OPERATOR)
        return issued.key.id, issued.token.value


def open_account(runtime: Runtime, credits: int = 10**9) -> Account:
    name = f"acct-{uuid.uuid4().hex[:8]}"
    return Account(runtime.app.open_account(name, OPERATOR, credits=credits).account.id, runtime)


def use(
    runtime: Runtime,
    account: UUID,
    key: UUID,
    cost: int,
    address: str = "198.51.100.1",
    meter: UUID | None = None,
) -> None:
    """One completion of `cost`, reserved (under the key's lineage `meter`, as the gateway
    does; None: the key's own) and settled on the ledger."""
    request = f"req-{uuid.uuid4().hex}"
    lineage = str(meter) if meter else None
    runtime.spend.admit(account, request, key, "a/b", cost, None, meter=lineage).result()
    runtime.spend.settle(
        account,
        request,
        cost,
        Usage(
            key_name="k",
            model="a/b",
            provider="p",
            region=None,
            prompt_tokens=1,
            completion_tokens=1,
            status="ok",
            status_code=200,
            latency_ms=1,
            streamed=False,
            client_ip=address,
            user_agent="app/1",
        ),
    ).result()


@dataclass
class Subscriber:
    """A receiver subscribed by each account it opens, on one runtime: `deliver()` runs the
    deliverer and returns the bodies the receiver has been sent, parsed."""

    runtime: Runtime
    receiver: Receiver

    def account(self, events: list[str], credits: int = 10**9) -> Account:
        """A new account whose endpoint (the receiver) subscribes to `events`."""
        account = open_account(self.runtime, credits)
        account.subscribe(self.receiver.url, events)
        return account

    def deliver(self, passes: int = 1, now_us: Any = None) -> list[dict[str, Any]]:
        deliver(self.runtime, make_deliverer(self.runtime, now_us=now_us), passes)
        return self.bodies()

    def bodies(self) -> list[dict[str, Any]]:
        return [orjson.loads(r.body) for r in self.receiver.received]
