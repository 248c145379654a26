"""A settlement survives a store outage: once the upstream answered, the settlement is retried
until durable (in order), never turned into a release; other commands fail fast with
StoreUnavailable. At the HTTP edge: the client is told what it is charged, a store that does not
answer is a 503 `store_unavailable` with `retry-after`, and every error carries its request id."""

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import OperationalError, ProgrammingError
from sqlalchemy import select
from starlette.testclient import TestClient

from application.retry import StoreUnavailable, is_transient
from domain.actor import Actor
from domain.scope import Scope
from infrastructure.catalogue import demo_catalogue
from infrastructure.http.app import create_app
from infrastructure.runtime import Runtime, open_runtime
from infrastructure.settings import load_settings
from projections.schema import holds
from projections.schema import usage as usage_table
from tests.support.spend import usage
from tests.support.stores import PEPPER

OPERATOR = Actor("operator", "outage-tests")
HELLO = [{"role": "user", "content": "hello demo"}]


class Outage:
    """Makes the ledger's saves fail (as a lost connection does) until `end()`."""

    def __init__(self, save: Callable[..., Any], error: type[Exception] = OperationalError) -> None:
        self._save = save
        self._error = error
        self.down = threading.Event()
        self.failed = 0

    def __call__(self, *aggregates: Any, **kwargs: Any) -> Any:
        if self.down.is_set():
            self.failed += 1
            raise self._error("server closed the connection unexpectedly")
        return self._save(*aggregates, **kwargs)

    def start(self) -> None:
        self.down.set()

    def end(self) -> None:
        self.down.clear()


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    settings = load_settings(
        {
            "LOWROUTER_TOKEN_PEPPER": PEPPER,
            "LOWROUTER_DATA_DIR": str(tmp_path),
            "LOWROUTER_STORE_WAIT_SECONDS": "0.3",
        },
        database_url=f"sqlite:///{tmp_path}/lowrouter.db",
    )
    runtime = open_runtime(settings)
    yield runtime
    runtime.close()


def wait_until(condition: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_transient_and_permanent_store_errors_are_told_apart() -> None:
    assert is_transient(OperationalError("canceling statement due to statement timeout"))
    assert is_transient(StoreUnavailable("down"))
    wrapped = RuntimeError("while saving")
    wrapped.__cause__ = OperationalError("connection lost")
    assert is_transient(wrapped)
    assert not is_transient(ProgrammingError("relation does not exist"))
    assert not is_transient(ValueError("a bug"))


def test_a_settlement_is_retried_across_an_outage_while_new_holds_fail_fast(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = runtime.app.open_account("outage", OPERATOR, credits=10**6).account
    key = runtime.app.create_key(account.id, "k", Scope(), OPERATOR).key
    spend = runtime.spend
    spend.admit(account.id, "answered", key.id, "m", 5000, None).result(10)
    outage = Outage(runtime.app.save)
    monkeypatch.setattr(runtime.app, "save", outage)

    outage.start()
    settled = spend.settle(account.id, "answered", 1234, usage())
    refused = spend.admit(account.id, "new", key.id, "m", 5000, None)
    with pytest.raises(StoreUnavailable):
        refused.result(10)  # a new request is refused at once (nothing held)
    wait_until(lambda: outage.failed >= 3)  # the settlement is being retried
    assert not settled.done() and spend.retrying == 1
    outage.end()

    assert settled.result(10) == 1234  # durable once the store is back: charged, not released
    view = spend.view(account.id).result(10)
    assert (view.held, view.balance) == (0, 10**6 - 1234)
    runtime.projections.catch_up()
    with runtime.engine.connect() as conn:
        rows = conn.execute(select(usage_table.c.request_id, usage_table.c.cost)).all()
    assert [tuple(row) for row in rows] == [("answered", 1234)]


def test_a_permanent_error_is_not_retried(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = runtime.app.open_account("broken", OPERATOR, credits=10**6).account
    key = runtime.app.create_key(account.id, "k", Scope(), OPERATOR).key
    runtime.spend.admit(account.id, "r", key.id, "m", 10, None).result(10)
    outage = Outage(runtime.app.save, ProgrammingError)
    monkeypatch.setattr(runtime.app, "save", outage)
    outage.start()
    with pytest.raises(ProgrammingError):
        runtime.spend.settle(account.id, "r", 5, usage()).result(10)
    assert outage.failed == 1


def test_a_permanent_error_after_a_transient_one_fails_every_command_it_was_retrying(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = runtime.app.open_account("flaky", OPERATOR, credits=10**6).account
    key = runtime.app.create_key(account.id, "k", Scope(), OPERATOR).key
    spend = runtime.spend
    for rid in ("first", "second"):
        spend.admit(account.id, rid, key.id, "m", 10, None).result(10)
    later: list[Any] = []

    def save(*aggregates: Any, **kwargs: Any) -> Any:
        if not later:  # the connection drops; meanwhile the second settlement is queued
            later.append(spend.settle(account.id, "second", 5, usage()))
            raise OperationalError("server closed the connection unexpectedly")
        raise ProgrammingError("relation does not exist")  # then the store is broken

    monkeypatch.setattr(runtime.app, "save", save)
    first = spend.settle(account.id, "first", 5, usage())
    with pytest.raises(ProgrammingError):
        first.result(10)
    with pytest.raises(ProgrammingError):  # taken into the retried batch: failed with it
        later[0].result(5)
    assert spend.retrying == 0


@pytest.fixture
def demo(runtime: Runtime) -> Iterator[tuple[TestClient, str]]:
    app = create_app(runtime, demo_catalogue(), run_background=False)
    opened = runtime.app.open_account("demo", OPERATOR, 10_000_000)
    token = runtime.app.create_key(opened.account.id, "k", Scope(), OPERATOR).token.value
    with TestClient(app, base_url="http://gateway.test", raise_server_exceptions=False) as client:
        yield client, token


def chat(client: TestClient, token: str, stream: bool = False) -> Any:
    return client.post(
        "/api/v1/chat/completions",
        headers={"Authorization": f"Bearer {token}"},
        json={"model": "lowrouter/echo", "messages": HELLO, "stream": stream},
    )


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_an_answered_request_is_told_its_charge_when_the_settlement_waits_out_an_outage(
    demo: tuple[TestClient, str], runtime: Runtime, monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    client, token = demo
    outage = Outage(runtime.app.save)
    real_settle = runtime.spend.settle

    def settle_during_an_outage(*args: Any, **kwargs: Any) -> Any:
        outage.start()  # the store goes away just as the answer is settled
        threading.Timer(1.0, outage.end).start()  # … for longer than the store wait (0.3 s)
        return real_settle(*args, **kwargs)

    monkeypatch.setattr(runtime.app, "save", outage)
    monkeypatch.setattr(runtime.spend, "settle", settle_during_an_outage)
    started = time.monotonic()
    response = chat(client, token, stream)
    assert response.status_code == 200
    assert time.monotonic() - started < 1.0  # answered after the store wait, not the outage
    if stream:
        assert "error" not in response.text and response.text.rstrip().endswith("[DONE]")
    wait_until(lambda: not outage.down.is_set() and runtime.spend.retrying == 0)
    runtime.projections.catch_up()
    with runtime.engine.connect() as conn:
        rows = conn.execute(select(usage_table)).all()
    assert len(rows) == 1 and rows[0].status == "ok" and rows[0].cost > 0
    assert rows[0].request_id == response.headers["x-request-id"]
    if not stream:
        assert response.headers["x-lowrouter-cost"] == f"{rows[0].cost / 1e6:.6f}"


def test_a_store_that_does_not_answer_is_a_503_with_retry_after_and_the_request_id(
    demo: tuple[TestClient, str], runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, token = demo
    outage = Outage(runtime.app.save)
    monkeypatch.setattr(runtime.app, "save", outage)
    outage.start()
    response = chat(client, token)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "store_unavailable"
    assert response.headers["retry-after"] == "2"
    assert response.headers["x-request-id"].startswith("req_")
    outage.end()
    assert chat(client, token).status_code == 200  # recovered by itself, same connection
    # The 200 was answered before its settlement was durable (settling after the answer): a
    # read of the account's page queues behind it, so its hold is closed once the read answers.
    account_id = runtime.app.find_account("demo").id
    runtime.spend.view(account_id).result(10)
    runtime.projections.catch_up()
    with runtime.engine.connect() as conn:
        assert conn.execute(select(holds)).all() == []  # the refused request holds nothing


def test_an_unexpected_error_is_a_500_with_the_request_id_and_the_connection_stays_usable(
    demo: tuple[TestClient, str], runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, token = demo

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(runtime.spend, "view", broken)
    response = client.get("/api/v1/key", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert response.headers["x-request-id"].startswith("req_")
    monkeypatch.undo()
    assert chat(client, token).status_code == 200
