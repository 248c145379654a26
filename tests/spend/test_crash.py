"""Crash safety: a gateway killed with open streams leaves holds; the reconciler charges each
request that reached the upstream exactly once, at its hold, and nothing stays held."""

import asyncio
import signal
import time
from pathlib import Path

import httpx
from sqlalchemy import func, select

from domain.actor import Actor
from domain.scope import Scope
from infrastructure.runtime import open_runtime
from infrastructure.settings import load_settings
from projections.schema import holds, usage
from tests.fake_upstream import fake_environ, run_fake_upstream, write_catalogue
from tests.support.processes import free_port, gateway_environment, start_gateway, wait_until_up
from tests.support.stores import PEPPER

OPERATOR = Actor("operator", "test")
STREAMS = 8


async def open_streams(url: str, token: str, started: asyncio.Event, count: int) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        streaming: set[int] = set()

        async def one(index: int) -> None:
            body = {
                "model": "fake/stall",
                "stream": True,
                "max_tokens": 50,
                "messages": [{"role": "user", "content": "tell me a long story"}],
            }
            headers = {"Authorization": f"Bearer {token}"}
            try:
                async with client.stream("POST", url, json=body, headers=headers) as response:
                    async for _ in response.aiter_lines():
                        streaming.add(index)
                        if len(streaming) == count:  # every stream is open and flowing
                            started.set()
            except httpx.HTTPError:
                pass  # the gateway was killed under us

        await asyncio.gather(*(one(i) for i in range(count)))


def test_killed_gateway_is_reconciled_every_request_charged_once(
    database_url: str, tmp_path: Path
) -> None:
    with run_fake_upstream(slow_seconds=30) as upstream:
        catalogue = write_catalogue(tmp_path / "lowrouter.toml", upstream.base_url)
        env = {
            "LOWROUTER_TOKEN_PEPPER": PEPPER,
            "LOWROUTER_DATA_DIR": str(tmp_path),
            # the killed gateway counts as gone 1 s after its last lease renewal
            "LOWROUTER_PROCESS_LEASE_SECONDS": "1",
        }
        runtime = open_runtime(load_settings(env, database_url=database_url))
        account = runtime.app.open_account("crash", OPERATOR, credits=10**9).account
        key = runtime.app.create_key(account.id, "k", Scope(), OPERATOR)
        port = free_port()
        gateway_env = gateway_environment(
            database_url, tmp_path, **env, **fake_environ(), LOWROUTER_CONFIG=str(catalogue)
        )
        gateway = start_gateway(gateway_env, port)
        try:
            wait_until_up(port, gateway)

            async def scenario() -> None:
                started = asyncio.Event()
                task = asyncio.create_task(
                    open_streams(
                        f"http://127.0.0.1:{port}/api/v1/chat/completions",
                        key.token.value,
                        started,
                        STREAMS,
                    )
                )
                await asyncio.wait_for(started.wait(), 20)
                gateway.send_signal(signal.SIGKILL)
                await task

            asyncio.run(scenario())
        finally:
            gateway.kill()
            gateway.wait()
        reached_upstream = len(upstream.requests)

    assert reached_upstream == STREAMS
    runtime.projections.catch_up()
    with runtime.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(holds)).scalar_one() == STREAMS
    held_before = runtime.spend.view(account.id).result().held
    assert held_before > 0

    # After the hold timeout (1 s here), the reconciler settles every open hold at its amount.
    runtime.settings = load_settings(
        {**env, "LOWROUTER_HOLD_TIMEOUT_SECONDS": "1"}, database_url=database_url
    )
    time.sleep(1.1)
    assert runtime.reconcile() == STREAMS
    assert runtime.reconcile() == 0  # idempotent: nothing charged twice

    runtime.projections.catch_up()
    view = runtime.spend.view(account.id).result()
    assert view.held == 0
    assert view.balance == 10**9 - held_before
    with runtime.engine.connect() as conn:
        rows = conn.execute(
            select(usage.c.status, usage.c.cost, usage.c.held).where(
                usage.c.account_id == str(account.id)
            )
        ).all()
        assert conn.execute(select(func.count()).select_from(holds)).scalar_one() == 0
    assert len(rows) == STREAMS
    assert all(row.status == "unsettled" and row.cost == row.held > 0 for row in rows)
    runtime.close()
