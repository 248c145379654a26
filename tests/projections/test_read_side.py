"""The read side: a query names the projections it reads, and asking it brings them up to date,
so an answer given right after a command sees it without the caller catching anything up; and
every query's declaration covers every projection table its SQL touches."""

import importlib
import pkgutil
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import event

import projections.queries
from domain.actor import Actor
from domain.scope import Scope
from domain.usage import Usage
from infrastructure.runtime import Runtime, open_runtime
from infrastructure.settings import Settings
from projections import all_projections
from projections.queries.dashboard import UsageFilter
from projections.queries.forensics import flags_for_keys
from projections.queries.freshness import Query
from projections.queries.management import meters, usage_page
from projections.runner import ProjectionFailed
from projections.schema import positions
from projections.usage import UsageProjection

OPERATOR = Actor("operator", "cli:test")


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    opened = open_runtime(settings)  # no background runner: nothing catches up unless asked
    yield opened
    opened.close()


def use(runtime: Runtime, account: UUID, key: UUID, address: str) -> None:
    request = f"req-{uuid.uuid4().hex}"
    runtime.spend.reserve(account, request, key, "a/b", 1000, None).result()
    usage = Usage(
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
    )
    runtime.spend.settle(account, request, 700, usage).result()


def test_an_answer_right_after_a_command_sees_it_with_no_catch_up_by_the_caller(
    runtime: Runtime,
) -> None:
    account = runtime.app.open_account("fresh", OPERATOR, credits=10**9).account.id
    key = runtime.app.create_key(account, "prod", Scope(), OPERATOR).key.id
    use(runtime, account, key, "198.51.100.1")
    use(runtime, account, key, "203.0.113.9")  # a new address: a flag, in forensics

    # The tables as they are have not seen the completions: nothing has caught them up.
    assert usage_page.run(runtime.engine, account) == []
    assert flags_for_keys.run(runtime.engine, [key]) == {str(key): []}

    rows = runtime.reads.ask(usage_page, account)
    assert [(row["cost"], row["client_ip"]) for row in rows] == [
        (700, "203.0.113.9"),
        (700, "198.51.100.1"),
    ]
    flags = runtime.reads.ask(flags_for_keys, [key])[str(key)]
    assert [(f.kind, f.subject) for f in flags] == [("new_address", "203.0.113.9")]


# Every query's declaration covers the projections whose tables its SQL reads ----------------

OWN_TABLES = {positions.name}  # the runner's positions: any query may read where it stands


def every_query() -> dict[str, Query[..., Any]]:
    found: dict[str, Query[..., Any]] = {}
    for module in pkgutil.iter_modules(projections.queries.__path__):
        loaded = importlib.import_module(f"projections.queries.{module.name}")
        for name, value in vars(loaded).items():
            if isinstance(value, Query) and value.run.__module__ == loaded.__name__:
                found[f"{module.name}.{name}"] = value
    return found


def owners() -> dict[str, str]:
    """Each projection table's name -> the projection that writes it."""
    return {table.name: p.name for p in all_projections() for table in p.tables}


def tables_read(runtime: Runtime, run: Callable[[], object]) -> set[str]:
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        statements.append(statement)

    event.listen(runtime.engine, "before_cursor_execute", seen)
    try:
        run()
    finally:
        event.remove(runtime.engine, "before_cursor_execute", seen)
    assert statements, "the query ran no SQL: give it arguments that make it read"
    return {name for text in statements for name in re.findall(r"\blr_[a-z_]+\b", text)}


def undeclared(runtime: Runtime, asked: Query[..., Any], run: Callable[[], object]) -> set[str]:
    """The tables the query read that no projection it declares writes (or nobody does)."""
    writers = owners()
    return {
        table
        for table in tables_read(runtime, run) - OWN_TABLES
        if writers.get(table) not in asked.needs
    }


def examples(runtime: Runtime) -> dict[str, Callable[[Query[..., Any]], Callable[[], object]]]:
    """How to call each query so that it reads (an empty list of ids reads nothing)."""
    account = runtime.app.open_account("reads", OPERATOR, credits=10**9).account.id
    key = runtime.app.create_key(account, "prod", Scope(), OPERATOR).key.id
    use(runtime, account, key, "198.51.100.1")
    now = datetime.now(UTC)
    engine = runtime.engine

    def call(*args: Any, **kwargs: Any) -> Callable[[Query[..., Any]], Callable[[], object]]:
        return lambda q: lambda: q.run(engine, *args, **kwargs)

    return {
        "dashboard.spend_history": call(account, [key], "2000-01-01"),
        "dashboard.usage_totals": call(UsageFilter(account)),
        "dashboard.usage_rows": call(UsageFilter(account), limit=5),
        "dashboard.rows_newer_than": call(UsageFilter(account), 0),
        "dashboard.usage_choices": call(account),
        "forensics.investigate_key": call(runtime.app, key, None, now),
        "forensics.flags_for_keys": call([key]),
        "forensics.matches_of_display": call("lr-sk-AbCd", "wXyZ"),
        "forensics.match_of_token_hash": call("0" * 64),
        "forensics.recorded_money": call(),
        "holds.stale_holds": call(now),
        "management.usage_page": call(account),
        "management.last_used": call([key]),
        "management.meters": call([key]),
        "management.management_key_account": call(key),
        "management.all_accounts": call(),
        "management.names_of_accounts": call(),
        "management.webhooks_of_account": call(account),
        "management.deliveries_of_webhook": call(uuid.uuid4()),
    }


@pytest.fixture
def local(sqlite_url: str, tmp_path: Any) -> Iterator[Runtime]:
    from infrastructure.settings import load_settings
    from tests.support.stores import PEPPER

    env = {"LOWROUTER_TOKEN_PEPPER": PEPPER, "LOWROUTER_DATA_DIR": str(tmp_path)}
    opened = open_runtime(load_settings(env, database_url=sqlite_url))
    yield opened
    opened.close()


def test_every_query_declares_each_projection_whose_tables_it_reads(local: Runtime) -> None:
    queries, calls = every_query(), examples(local)
    assert set(queries) == set(calls), "every query needs an example here (and only queries)"
    known = {projection.name for projection in all_projections()}
    assert {name: q.needs for name, q in queries.items() if not set(q.needs) <= known} == {}
    local.projections.catch_up()
    missing = {
        name: sorted(tables)
        for name, asked in queries.items()
        if (tables := undeclared(local, asked, calls[name](asked)))
    }
    assert missing == {}


def test_a_query_that_forgets_a_projection_it_reads_is_caught(local: Runtime) -> None:
    calls = examples(local)
    forgetful = Query(("keys",), usage_page.run)  # reads lr_usage, declares only the keys
    assert undeclared(local, forgetful, calls["management.usage_page"](forgetful)) == {"lr_usage"}


def test_a_failed_projection_refuses_a_strict_answer_and_a_best_effort_one_reads_as_is(
    local: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = local.app.open_account("failing", OPERATOR, credits=10**9).account.id
    key = local.app.create_key(account, "prod", Scope(), OPERATOR).key.id

    def broken(self: object, conn: object, events: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(UsageProjection, "apply", broken)
    use(local, account, key, "198.51.100.1")
    with pytest.raises(ProjectionFailed) as failure:
        local.reads.ask(usage_page, account)
    assert failure.value.name == "usage"
    assert local.reads.best_effort.ask(usage_page, account) == []  # the table as it is
    # A query of other projections is not held back by it.
    assert local.reads.ask(meters, [key]) == {str(key): str(key)}
