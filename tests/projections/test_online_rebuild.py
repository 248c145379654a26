"""`projections rebuild` is online: while a projection is rebuilt in shadow tables, every
reader keeps seeing complete rows, and events appended meanwhile are in the result."""

import threading
import uuid

from sqlalchemy import select

from domain.actor import Actor
from domain.scope import Scope
from domain.tokens import hash_token
from domain.usage import Usage
from infrastructure.runtime import open_runtime
from infrastructure.settings import Settings
from projections.lookup import find_key
from projections.rebuild import rebuild
from projections.runner import BATCH_SIZE
from projections.schema import metadata

OPERATOR = Actor("operator", "test")


def contents(runtime, tables):  # type: ignore[no-untyped-def]
    with runtime.engine.connect() as conn:
        return {t.name: sorted(tuple(r) for r in conn.execute(select(t)).all()) for t in tables}


def test_key_lookup_rebuild_never_hides_a_key_from_the_gateway(settings: Settings) -> None:
    runtime = open_runtime(settings)
    try:
        account = runtime.app.open_account("rebuilt", OPERATOR, credits=10**9).account
        issued = runtime.app.create_key(account.id, "always-there", Scope(), OPERATOR)
        token_hash = hash_token(settings.pepper, issued.token)
        # Enough events that the rebuild works in several batches.
        for _ in range(BATCH_SIZE // 2 + 50):
            request = uuid.uuid4().hex
            runtime.spend.reserve(account.id, request, issued.key.id, "m", 1, None)
            runtime.spend.release(account.id, request, "test")
        runtime.spend.view(account.id).result()
        runtime.projections.catch_up()
        tables = [t for t in metadata.sorted_tables if t.name in ("lr_keys", "lr_accounts")]
        before = contents(runtime, tables)

        misses: list[int] = []
        stop = threading.Event()

        def gateway_reads() -> None:
            while not stop.is_set():
                if find_key(runtime.engine, token_hash) is None:
                    misses.append(1)

        reader = threading.Thread(target=gateway_reads)
        reader.start()
        try:
            applied = rebuild(runtime.projections, "keys")
            late = runtime.app.create_key(account.id, "created-after", Scope(), OPERATOR)
        finally:
            stop.set()
            reader.join()

        assert misses == []
        assert applied > 0
        after = contents(runtime, tables)
        assert {k: [r for r in v if str(late.key.id) not in r] for k, v in after.items()} == before
        assert find_key(runtime.engine, hash_token(settings.pepper, late.token)) is not None
        assert all(s.lag == 0 for s in runtime.projections.status() if s.name == "keys")
    finally:
        runtime.close()


def test_usage_rebuild_equals_the_incremental_tables(settings: Settings) -> None:
    runtime = open_runtime(settings)
    try:
        account = runtime.app.open_account("usage-rebuilt", OPERATOR, credits=10**9).account
        key = runtime.app.create_key(account.id, "k", Scope(), OPERATOR).key
        for i in range(30):
            request = f"r{i}"
            runtime.spend.reserve(account.id, request, key.id, "m", 100, None)
            runtime.spend.settle(
                account.id,
                request,
                10 + i,
                Usage(
                    key_name="k",
                    model="m",
                    provider="p",
                    region=None,
                    prompt_tokens=i,
                    completion_tokens=i,
                    status="ok",
                    status_code=200,
                    latency_ms=i,
                    streamed=False,
                    client_ip="10.0.0.1",
                    user_agent="t",
                ),
            )
        runtime.spend.view(account.id).result()
        runtime.projections.catch_up()
        tables = list(runtime.projections.projections["usage"].tables)
        before = contents(runtime, tables)
        rebuild(runtime.projections, "usage")
        assert contents(runtime, tables) == before
    finally:
        runtime.close()
