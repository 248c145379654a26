"""The pool lowrouter builds reconnects about every RECONNECT_EVERY while the store is out, not
after psycopg_pool's own 1, 2, 4, 8 … s: infrastructure.database overrides psycopg_pool
internals for it (`_add_connection`, `psycopg_pool.base.AttemptWithBackoff`), so an upgrade
that breaks the override must fail here. No PostgreSQL needed: a port nobody listens on."""

import socket
import time

import pytest

from infrastructure import database
from infrastructure.database import Database


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_pool_whose_store_is_out_retries_at_the_steady_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(database, "RECONNECT_EVERY", 0.05)  # steady: 20 attempts a second
    db = Database(f"postgresql://nobody@127.0.0.1:{unused_port()}/nothing", pool_size=2)
    try:
        deadline = time.monotonic() + 1.5  # psycopg_pool's own backoff: 2 attempts by then
        while time.monotonic() < deadline:
            if db.pool.get_stats().get("connections_errors", 0) >= 6:
                break
            time.sleep(0.02)
        assert db.pool.get_stats().get("connections_errors", 0) >= 6
    finally:
        db.close()
