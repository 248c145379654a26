"""A process's PostgreSQL connection cost, as pg_stat_activity shows it: a gateway worker holds
at most 3 connections idle and at most LOWROUTER_DB_POOL_SIZE under load; the background process
its pool plus one LISTEN connection. Every connection says who it is (application_name)."""

import asyncio
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from domain.actor import Actor
from domain.scope import Scope
from infrastructure.runtime import open_runtime
from infrastructure.settings import load_settings, postgres_conninfo
from tests.support.processes import (
    fire,
    free_port,
    gateway_environment,
    start_background,
    start_gateway,
    stop,
    wait_until_up,
)
from tests.support.stores import PEPPER

OPERATOR = Actor("operator", "test")
POOL_SIZE = 3


def connections(database_url: str) -> Counter[str]:
    """Connections to this test's database, by application_name."""
    database = postgres_conninfo(database_url).split("dbname=")[1].split()[0]
    with psycopg.connect(postgres_conninfo(database_url).replace(database, "postgres")) as conn:
        rows = conn.execute(
            "SELECT application_name, count(*) FROM pg_stat_activity WHERE datname = %s "
            "GROUP BY application_name",
            [database],
        ).fetchall()
    return Counter({name: count for name, count in rows})


def wait_for(condition, timeout: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def worker_and_background(postgres_url: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """One gateway worker (LOWROUTER_BACKGROUND=external) and one background process."""
    extra = {
        "LOWROUTER_BACKGROUND": "external",
        "LOWROUTER_DB_POOL_SIZE": str(POOL_SIZE),
        # 600 requests queue for POOL_SIZE connections: on a busy 2-core machine a wait can
        # pass the 2 s default and answer 503 store_unavailable, which is not what this counts
        "LOWROUTER_STORE_WAIT_SECONDS": "60",
    }
    port = free_port()
    env = gateway_environment(postgres_url, tmp_path, **extra)
    worker = start_gateway(env, port)
    background = start_background(
        {**env, "LOWROUTER_BACKGROUND": "inline"}, stderr=subprocess.DEVNULL
    )
    try:
        wait_until_up(port, worker)
        yield postgres_url, f"http://127.0.0.1:{port}/api/v1"
    finally:
        for process in (worker, background):
            stop(process)


def test_a_worker_holds_at_most_three_idle_and_its_pool_size_under_load(
    worker_and_background: tuple[str, str], tmp_path: Path
) -> None:
    database_url, url = worker_and_background
    assert wait_for(lambda: connections(database_url)["lowrouter-background-listen"] == 1)
    idle = connections(database_url)
    assert 1 <= idle["lowrouter-gateway"] <= 3, idle
    assert idle["lowrouter-background"] <= POOL_SIZE, idle

    settings = load_settings(
        {"LOWROUTER_TOKEN_PEPPER": PEPPER, "LOWROUTER_DATA_DIR": str(tmp_path)},
        database_url=database_url,
    )
    runtime = open_runtime(settings)
    try:
        account = runtime.app.open_account("budget", OPERATOR, credits=10**9).account
        token = runtime.app.create_key(account.id, "busy", Scope(), OPERATOR).token.value
    finally:
        runtime.close()

    samples: list[Counter[str]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(connections(database_url))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        statuses = asyncio.run(fire([url], [token], 600))
    finally:
        done.set()
        sampler.join()
    assert statuses.count(200) == 600, Counter(statuses)
    peak_worker = max(s["lowrouter-gateway"] for s in samples)
    peak_background = max(s["lowrouter-background"] for s in samples)
    assert peak_worker >= 1 and peak_worker <= POOL_SIZE, samples
    assert peak_background <= POOL_SIZE, samples
    after = connections(database_url)
    peaks = f"peak worker {peak_worker} background {peak_background}"
    print(f"idle {dict(idle)}, {peaks}, after {dict(after)}")
    assert after["lowrouter-gateway"] <= POOL_SIZE and after["lowrouter-background-listen"] == 1
    # Nothing unnamed: every connection a lowrouter process opens says which process it is.
    named = {"lowrouter-gateway", "lowrouter-background", "lowrouter-background-listen"}
    assert set(after) <= named, after
