"""The key policy's limits hold exactly across two gateway processes on one PostgreSQL (directly,
and through transaction-mode PgBouncer): requests per minute, tokens per minute and concurrent
requests are invariants of the account's ledger page, and an expiry takes effect on every
process with no command run.

The gateways are `tests.policy.shifted_gateway` processes (the production app whose clock a
SIGUSR1 moves on 61 s), facing the fake upstream."""

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from domain.actor import Actor
from domain.policy import KeyPolicy
from domain.pricing import prompt_bound
from domain.scope import Scope
from infrastructure.runtime import Runtime, open_runtime
from infrastructure.settings import load_settings
from tests.fake_upstream import FakeUpstream, fake_environ, run_fake_upstream, write_catalogue
from tests.support.processes import free_port, gateway_environment, stop, wait_until_up
from tests.support.stores import PEPPER, database_url_named, pg_admin_conninfo

OPERATOR = Actor("operator", "test")
ROOT = Path(__file__).resolve().parents[2]
HELLO = [{"role": "user", "content": "Hello"}]
MAX_TOKENS = 50


@dataclass
class Pair:
    runtime: Runtime
    urls: list[str]
    processes: list[subprocess.Popen[bytes]]
    upstream: FakeUpstream
    shifted: timedelta = timedelta(0)

    def key(self, policy: KeyPolicy, scope: Scope | None = None) -> str:
        ledger = self.runtime.app
        account = ledger.open_account(f"p-{uuid.uuid4().hex}", OPERATOR, credits=10**9)
        issued = ledger.create_key(account.account.id, "k", scope or Scope(), OPERATOR, policy)
        return issued.token.value

    def next_minute(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGUSR1)
        self.shifted += timedelta(seconds=61)
        time.sleep(0.3)

    def now(self) -> datetime:
        """The gateways' clock."""
        return datetime.now(UTC) + self.shifted


@pytest.fixture(scope="module", params=["direct", "transaction"])
def pair(
    request: pytest.FixtureRequest,
    postgres_template: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pair]:
    """Two gateway processes, reaching PostgreSQL directly or through transaction-mode
    PgBouncer (LISTEN straight to PostgreSQL), and this process's runtime (directly)."""
    name = f"lrt_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg_admin_conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{postgres_template}"')
    url = database_url_named(name)
    gateway_url, route = url, {}
    if request.param == "transaction":
        gateway_url = request.getfixturevalue("pgbouncers")["transaction"].url_for(url)
        route = {"LOWROUTER_DATABASE_POOLER": "transaction", "LOWROUTER_DIRECT_DATABASE_URL": url}
    home = tmp_path_factory.mktemp("pair")
    with run_fake_upstream(slow_seconds=2.5) as upstream:
        catalogue = write_catalogue(
            home / "lowrouter.toml", upstream.base_url, max_output_tokens=256
        )
        settings = load_settings(
            {"LOWROUTER_TOKEN_PEPPER": PEPPER, "LOWROUTER_DATA_DIR": str(home)},
            database_url=url,
        )
        runtime = open_runtime(settings)
        ports = [free_port(), free_port()]
        env = gateway_environment(
            gateway_url, home, **fake_environ(), **route, LOWROUTER_CONFIG=str(catalogue)
        )
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "tests.policy.shifted_gateway", str(port)],
                env=env,
                cwd=ROOT,
            )
            for port in ports
        ]
        try:
            for port, process in zip(ports, processes, strict=True):
                wait_until_up(port, process)
            yield Pair(
                runtime, [f"http://127.0.0.1:{p}/api/v1" for p in ports], processes, upstream
            )
        finally:
            for process in processes:
                stop(process)
            runtime.close()
    with psycopg.connect(pg_admin_conninfo(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def burst(
    urls: list[str], token: str, total: int, model: str, stream: bool = False
) -> list[httpx.Response]:
    body = request_body(model)
    if stream:
        body["stream"] = True
    limits = httpx.Limits(max_connections=total)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one(i: int) -> httpx.Response:
            response = await client.post(
                urls[i % len(urls)] + "/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            )
            await response.aread()
            return response

        return list(await asyncio.gather(*(one(i) for i in range(total))))


def request_body(model: str) -> dict[str, Any]:
    return {"model": model, "max_tokens": MAX_TOKENS, "messages": HELLO}


def estimate(model: str = "fake/slow") -> int:
    """The token estimate the gateway holds for one request (prompt bound + max_tokens)."""
    return prompt_bound(request_body(model)) + MAX_TOKENS


CASES = {
    # limit, requests sent, model (fake/slow and fake/stall keep holds open while the burst lands)
    "requests_per_minute": (KeyPolicy(requests_per_minute=30), 30, 200, "fake/ok", False),
    "tokens_per_minute": (KeyPolicy(tokens_per_minute=7 * estimate()), 7, 60, "fake/slow", False),
    "max_concurrent": (KeyPolicy(max_concurrent=4), 4, 40, "fake/stall", True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_limit_admits_exactly_its_allowance_across_two_processes(pair: Pair, case: str) -> None:
    policy, allowed, sent, model, stream = CASES[case]
    token = pair.key(policy)
    responses = asyncio.run(burst(pair.urls, token, sent, model, stream))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == allowed, sorted(statuses)
    refused = [r for r in responses if r.status_code != 200]
    assert {r.status_code for r in refused} == {429}
    code = "concurrency_limit_exceeded" if case == "max_concurrent" else "rate_limit_exceeded"
    for response in refused:
        assert response.json()["error"]["code"] == code
        assert int(response.headers["retry-after"]) >= 1  # a wait cures it
        assert "x-should-retry" not in response.headers
    if case != "max_concurrent":
        admitted = [r for r in responses if r.status_code == 200]
        kind = "requests" if case == "requests_per_minute" else "tokens"
        assert all(f"x-ratelimit-limit-{kind}" in r.headers for r in admitted)
        if case == "requests_per_minute":  # still full in this minute, on both processes
            still = asyncio.run(burst(pair.urls, token, 2, "fake/ok"))
            assert [r.status_code for r in still] == [429, 429]
        # The next minute (by the gateways' clock) admits again, on both processes.
        pair.next_minute()
    again = asyncio.run(burst(pair.urls, token, 2, "fake/ok"))
    assert [r.status_code for r in again] == [200, 200], [r.text for r in again]


def test_a_key_expiring_in_two_seconds_works_then_fails_on_every_process(pair: Pair) -> None:
    expires = pair.now() + timedelta(seconds=2)
    token = pair.key(KeyPolicy(expires_at=expires))
    first = asyncio.run(burst(pair.urls, token, 2, "fake/ok"))
    assert [r.status_code for r in first] == [200, 200]
    time.sleep(max(0.0, (expires - pair.now()).total_seconds()) + 0.2)
    after = asyncio.run(burst(pair.urls, token, 4, "fake/ok"))
    assert [r.status_code for r in after] == [401] * 4
    for response in after:
        assert response.json()["error"]["code"] == "key_expired"
        assert response.headers["x-should-retry"] == "false"
