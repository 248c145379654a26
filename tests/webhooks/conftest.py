"""Webhook fixtures: a runtime whose deliverer may call loopback, a receiver, and helpers to
run the deliverer a pass at a time."""

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import pytest

from domain.actor import Actor
from domain.scope import Scope
from domain.usage import Usage
from infrastructure.runtime import Runtime, open_runtime
from infrastructure.settings import load_settings
from infrastructure.webhooks.deliverer import Deliverer, DeliveryConfig
from infrastructure.webhooks.wiring import vault
from tests.support.stores import PEPPER
from tests.webhooks.receiver import Receiver, run_receiver

OPERATOR = Actor("operator", "cli:test")
SHORT_SCHEDULE = (0.0, 0.0, 0.0)  # retries at once: the tests drive the passes


@pytest.fixture
def runtime(database_url: str, tmp_path: Any) -> Iterator[Runtime]:
    """On SQLite and PostgreSQL."""
    yield from _runtime(database_url, tmp_path)


@pytest.fixture
def local_runtime(sqlite_url: str, tmp_path: Any) -> Iterator[Runtime]:
    """On SQLite only: rules whose storage the two-store tests already cover."""
    yield from _runtime(sqlite_url, tmp_path)


@pytest.fixture
def pg_runtime(postgres_url: str, tmp_path: Any) -> Iterator[Runtime]:
    """On PostgreSQL only: several gateway processes, as in production."""
    yield from _runtime(postgres_url, tmp_path)


def _runtime(database_url: str, tmp_path: Any) -> Iterator[Runtime]:
    settings = load_settings(
        {
            "LOWROUTER_TOKEN_PEPPER": PEPPER,
            "LOWROUTER_DATA_DIR": str(tmp_path),
            "LOWROUTER_WEBHOOKS_ALLOW_PRIVATE": "true",
        },
        database_url=database_url,
    )
    runtime = open_runtime(settings)
    yield runtime
    runtime.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with run_receiver() as receiver:
        yield receiver


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
        issued = self.runtime.ledger.create_key(self.id, name, scope or Scope(), OPERATOR)
        return issued.key.id, issued.token.value


def open_account(runtime: Runtime, credits: int = 10**9) -> Account:
    name = f"acct-{uuid.uuid4().hex[:8]}"
    return Account(runtime.ledger.open_account(name, OPERATOR, credits=credits).account.id, runtime)


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
