"""Webhook fixtures: a runtime whose deliverer may call loopback, a receiver, and a subscriber
of that receiver (the helpers are in tests/support/webhooks.py)."""

from collections.abc import Iterator
from typing import Any

import pytest

from infrastructure.runtime import Runtime, open_runtime
from infrastructure.settings import load_settings
from tests.support.stores import PEPPER
from tests.support.webhook_receiver import Receiver, run_receiver
from tests.support.webhooks import Subscriber


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


@pytest.fixture
def subscriber(local_runtime: Runtime, receiver: Receiver) -> Subscriber:
    """On SQLite: the receiver, subscribed by each account it opens."""
    return Subscriber(local_runtime, receiver)
