"""Projections are pure functions of the log: built incrementally (with a restart in the middle)
they equal the same tables rebuilt from scratch."""

import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from domain.actor import Actor
from domain.errors import DomainError
from domain.scope import Scope
from domain.usage import Usage
from infrastructure.runtime import Runtime, open_runtime
from infrastructure.settings import Settings
from projections.schema import metadata

OPERATOR = Actor("operator", "test")

steps = st.lists(
    st.one_of(
        st.tuples(st.just("create"), st.integers(0, 3)),
        st.tuples(st.just("scope"), st.integers(0, 3)),
        st.tuples(st.just("rename"), st.integers(0, 3)),
        st.tuples(st.just("rotate"), st.integers(0, 3)),
        st.tuples(st.just("revoke"), st.integers(0, 3)),
        st.tuples(st.just("spend"), st.integers(0, 3)),
        st.tuples(st.just("hold"), st.integers(0, 3)),
        st.tuples(st.just("catch_up"), st.integers(0, 3)),
    ),
    min_size=1,
    max_size=25,
)


def table_contents(runtime: Runtime, names: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    contents = {}
    with runtime.engine.connect() as conn:
        for table in metadata.sorted_tables:
            if table.name in names:
                rows = conn.execute(select(table)).all()
                contents[table.name] = sorted(tuple(row) for row in rows)
    return contents


def run_history(runtime: Runtime, history: list[tuple[str, int]]) -> None:
    account = runtime.app.open_account(f"acct-{uuid.uuid4().hex[:8]}", OPERATOR, credits=10**9)
    account_id = account.account.id
    keys: list[uuid.UUID] = []
    for action, n in history:
        try:
            if action == "create" or not keys:
                keys.append(runtime.app.create_key(account_id, f"k{n}", Scope(), OPERATOR).key.id)
                continue
            key_id = keys[n % len(keys)]
            if action == "scope":
                runtime.app.scope_key(key_id, Scope(models=("a/b",), daily_limit=n), OPERATOR)
            elif action == "rename":
                runtime.app.rename_key(key_id, f"renamed-{n}", OPERATOR)
            elif action == "rotate":
                keys.append(runtime.app.rotate_key(key_id, OPERATOR).key.id)
            elif action == "revoke":
                runtime.app.revoke_key(key_id, OPERATOR)
            elif action in ("spend", "hold"):
                request = f"req-{uuid.uuid4().hex}"
                runtime.spend.reserve(account_id, request, key_id, "a/b", 1000 + n, None).result()
                if action == "spend":
                    runtime.spend.settle(
                        account_id,
                        request,
                        500 + n,
                        Usage(
                            key_name=f"k{n}",
                            model="a/b",
                            provider="p",
                            region=None,
                            prompt_tokens=n,
                            completion_tokens=n,
                            status="ok",
                            status_code=200,
                            latency_ms=n,
                            streamed=bool(n % 2),
                            client_ip="127.0.0.1",
                            user_agent="test",
                        ),
                    ).result()
            elif action == "catch_up":
                runtime.projections.catch_up()
        except DomainError:
            pass  # refused commands are part of a realistic history; they store nothing


def check_rebuild_equals_incremental(settings_: Settings, history: list[tuple[str, int]]) -> None:
    runtime = open_runtime(settings_)
    try:
        half = len(history) // 2
        run_history(runtime, history[:half])
        runtime.projections.catch_up()
    finally:
        runtime.close()
    # A restart in the middle: a new process continues from the stored positions.
    runtime = open_runtime(settings_)
    try:
        run_history(runtime, history[half:])
        runtime.projections.catch_up()
        names = [t.name for p in runtime.projections.projections.values() for t in p.tables]
        incremental = table_contents(runtime, names)
        for name in list(runtime.projections.projections):
            runtime.projections.reset(name)
        runtime.projections.catch_up()
        assert table_contents(runtime, names) == incremental
        assert all(s.lag == 0 for s in runtime.projections.status())
    finally:
        runtime.close()


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(history=steps)
def test_rebuild_equals_incremental_on_sqlite(
    tmp_path_factory: Any, history: list[tuple[str, int]]
) -> None:
    from infrastructure.settings import load_settings
    from tests.support.stores import PEPPER

    directory = tmp_path_factory.mktemp("rebuild")
    settings_ = load_settings(
        {"LOWROUTER_TOKEN_PEPPER": PEPPER, "LOWROUTER_DATA_DIR": str(directory)},
        database_url=f"sqlite:///{directory}/lowrouter.db",
    )
    check_rebuild_equals_incremental(settings_, history)


def test_rebuild_equals_incremental_for_a_long_history(settings: Settings) -> None:
    # One long history on each store (a PostgreSQL database per Hypothesis example is costly).
    history = [
        ("create", 0),
        ("spend", 0),
        ("hold", 1),
        ("catch_up", 0),
        ("scope", 0),
        ("spend", 1),
        ("rotate", 0),
        ("spend", 2),
        ("rename", 1),
        ("revoke", 0),
        ("create", 2),
        ("spend", 3),
        ("hold", 2),
        ("catch_up", 1),
        ("revoke", 3),
        ("spend", 2),
        ("rotate", 1),
        ("spend", 1),
    ]
    check_rebuild_equals_incremental(settings, history)
