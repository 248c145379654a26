"""Lag is visible, and a gateway whose key lookup stopped following the log refuses to
authenticate rather than serve stale access."""

import dataclasses
import time

import pytest
from starlette.testclient import TestClient

from domain.actor import Actor
from domain.scope import Scope
from infrastructure.catalogue import demo_catalogue
from infrastructure.http.app import create_app
from infrastructure.runtime import open_runtime
from infrastructure.settings import Settings
from projections.keys import KeyLookupProjection
from projections.runner import ProjectionFailed

OPERATOR = Actor("operator", "test")


def test_status_reports_each_projections_lag_until_caught_up(settings: Settings) -> None:
    runtime = open_runtime(settings)
    try:
        account = runtime.app.open_account("lagging", OPERATOR, credits=10**6).account
        runtime.spend.fund(account.id, 10**6, OPERATOR).result()
        status = {s.name: s for s in runtime.projections.status()}
        # Opening the account brought the key lookup up to date (an access change); the
        # funding since then, and everything for usage, is not applied yet: both lag.
        assert status["keys"].lag == 1
        assert status["usage"].lag > status["keys"].lag
        assert status["usage"].head == runtime.projections.head()
        runtime.projections.catch_up()
        assert all(s.lag == 0 for s in runtime.projections.status())
    finally:
        runtime.close()


def test_a_projection_that_fails_stops_loudly_at_the_events_position(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = open_runtime(settings)
    try:
        account = runtime.app.open_account("failing", OPERATOR).account
        position_before = runtime.projections.position("keys")

        def broken(self: object, conn: object, events: list[object]) -> None:
            raise RuntimeError("cannot apply")

        monkeypatch.setattr(KeyLookupProjection, "apply", broken)
        # The key's write landed: its token is returned, with a warning, never lost.
        issued = runtime.app.create_key(account.id, "k", Scope(), OPERATOR)
        assert issued.token.value and issued.warning and "not caught up" in issued.warning
        with pytest.raises(ProjectionFailed) as failure:
            runtime.projections.catch_up(["keys"])
        assert failure.value.name == "keys"
        assert failure.value.position == position_before + 1
        assert "position" in str(failure.value)
        # Nothing was skipped: the position did not move past the failing event.
        assert runtime.projections.position("keys") == position_before
    finally:
        runtime.close()


def test_gateway_refuses_to_authenticate_when_its_lookup_runner_died(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = open_runtime(settings)
    account = runtime.app.open_account("dying", OPERATOR, credits=10**6).account
    token = runtime.app.create_key(account.id, "k", Scope(), OPERATOR).token.value
    app = create_app(runtime, demo_catalogue("http://127.0.0.1:9/demo/v1"))
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(app) as client:
        assert client.get("/api/v1/key", headers=headers).status_code == 200

        def broken(self: object, conn: object, events: list[object]) -> None:
            raise RuntimeError("disk on fire")

        monkeypatch.setattr(KeyLookupProjection, "apply", broken)
        runtime.app.access_barrier = lambda position: None  # let the event land unprojected
        runtime.app.open_account("another", OPERATOR)
        runtime.projections.wake()
        deadline = time.monotonic() + 10
        while runtime.projections.failure is None and time.monotonic() < deadline:
            time.sleep(0.02)

        response = client.get("/api/v1/key", headers=headers)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "lookup_unavailable"
        assert client.get("/healthz").status_code == 503


def test_a_worker_refuses_when_the_key_lookup_failed_in_another_process(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serve`'s workers run no projections (the background process does): a failure recorded
    there must stop them too, until the projection is rebuilt or gets past the event."""
    background = open_runtime(settings)  # stands for `lowrouter projections run`
    account = background.app.open_account("elsewhere", OPERATOR, credits=10**6).account
    token = background.app.create_key(account.id, "k", Scope(), OPERATOR).token.value
    worker = open_runtime(
        dataclasses.replace(settings, background="external"), prepare_schema=False
    )
    app = create_app(worker, demo_catalogue("http://127.0.0.1:9/demo/v1"))
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with TestClient(app) as client:
            assert client.get("/api/v1/key", headers=headers).status_code == 200
            assert not worker.projections.alive  # the worker follows nothing itself

            def broken(self: object, conn: object, events: list[object]) -> None:
                raise RuntimeError("disk on fire")

            monkeypatch.setattr(KeyLookupProjection, "apply", broken)
            background.app.access_barrier = lambda position: None
            background.app.open_account("another", OPERATOR)
            with pytest.raises(ProjectionFailed):
                background.projections.catch_up(["keys"])

            def status() -> int:
                return client.get("/api/v1/key", headers=headers).status_code

            deadline = time.monotonic() + 5
            while status() != 503 and time.monotonic() < deadline:
                time.sleep(0.1)
            response = client.get("/api/v1/key", headers=headers)
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "lookup_unavailable"
            assert client.get("/healthz").status_code == 503
            # the dashboard of a worker that runs no projections sees it too (one condition)
            assert client.get("/dashboard/sign-in").status_code == 503

            monkeypatch.undo()  # the code is fixed; the projection gets past the event
            background.projections.catch_up(["keys"])
            deadline = time.monotonic() + 5
            while status() != 200 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert status() == 200 and client.get("/healthz").status_code == 200
            assert client.get("/dashboard/sign-in").status_code == 200
    finally:
        background.close()


def test_a_transient_store_error_is_retried_not_recorded_and_a_one_off_failure_is_forgiven(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eventsourcing.persistence import OperationalError

    runtime = open_runtime(settings)
    try:
        runtime.app.access_barrier = lambda position: None
        account = runtime.app.open_account("blips", OPERATOR).account
        real = KeyLookupProjection.apply
        failures = [
            OperationalError("canceling statement due to statement timeout"),
            OperationalError("server closed the connection unexpectedly"),
            RuntimeError("a one-off"),
        ]

        def flaky(self: KeyLookupProjection, conn: object, events: list[object]) -> None:
            if failures:
                raise failures.pop(0)
            real(self, conn, events)  # type: ignore[arg-type]

        monkeypatch.setattr(KeyLookupProjection, "apply", flaky)
        runtime.app.create_key(account.id, "k", Scope(), OPERATOR)
        runtime.projections.catch_up(["keys"])  # through two blips and a one-off failure
        assert failures == []
        assert runtime.projections.recorded_failure("keys") is None
        assert runtime.projections.failure is None
    finally:
        runtime.close()


def test_a_failure_text_never_carries_the_sql_parameters_or_a_hash() -> None:

    digest = "9f" * 32
    error = RuntimeError(
        f"(psycopg.errors.UniqueViolation) duplicate key {digest}\n[SQL: INSERT …]\n"
        f"[parameters: {{'token_hash': '{digest}'}}]"
    )
    text = str(ProjectionFailed("keys", 7, error))
    assert digest not in text and "parameters" not in text and "UniqueViolation" in text


def test_a_store_error_carrying_a_token_hash_never_reaches_the_logs(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 19's scenario: the key-lookup insert keeps timing out; the driver's error carries
    the bound parameters (a token hash). The runner retries, gives up for now and logs it:
    neither the text nor a chained traceback may carry the hash."""
    import logging

    import psycopg
    from sqlalchemy.exc import OperationalError as SAOperationalError

    import projections.runner as runner_module

    digest = "a7" * 32
    runtime = open_runtime(settings)
    try:
        runtime.app.access_barrier = lambda position: None
        account = runtime.app.open_account("timeouts", OPERATOR).account

        def timing_out(self: KeyLookupProjection, conn: object, events: list[object]) -> None:
            raise SAOperationalError(
                "INSERT INTO key_lookup (token_hash) VALUES (%(token_hash)s)",
                {"token_hash": digest},
                psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
            )

        monkeypatch.setattr(KeyLookupProjection, "apply", timing_out)
        monkeypatch.setattr(runner_module, "backoff", lambda attempt, base, cap: 0.0)
        runtime.app.create_key(account.id, "k", Scope(), OPERATOR)
        caplog.set_level(logging.DEBUG)
        runtime.projections.start()
        deadline = time.monotonic() + 10
        while not any("runner error" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the runner never reported the store trouble"
            time.sleep(0.05)
        runtime.projections.stop()
        assert any("runner error" in r.getMessage() for r in caplog.records)
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter())
        for record in caplog.records:  # the message and any traceback, as a handler writes it
            assert digest not in handler.format(record)
    finally:
        runtime.close()


def test_the_projection_engine_keeps_bound_parameters_out_of_its_errors(tmp_path: object) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    from infrastructure.persistence import build_engine

    digest = "b8" * 32
    engine = build_engine(f"sqlite:///{tmp_path}/hidden.db")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE k (token_hash TEXT PRIMARY KEY)"))
        conn.execute(text("INSERT INTO k VALUES (:h)"), {"h": digest})
    with pytest.raises(IntegrityError) as raised, engine.begin() as conn:
        conn.execute(text("INSERT INTO k VALUES (:h)"), {"h": digest})
    assert digest not in str(raised.value)
    engine.dispose()
