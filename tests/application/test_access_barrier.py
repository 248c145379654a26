"""The access barrier (application.access_barrier), on eventsourcing's in-memory store: every
command that changes access waits for the key lookup to reach its last event before returning; a
lagging lookup fails the command, except where a new inference token was written (create,
rotate), where it becomes a warning so the token is not lost; a command that records nothing
waits for nothing."""

from collections.abc import Callable
from datetime import timedelta
from uuid import UUID

import pytest

from application import management_keys
from application.access_barrier import await_access, await_issued_access
from application.app import Lowrouter
from application.leaks import handle_leak
from domain.actor import Actor
from domain.scope import Scope

OPERATOR = Actor("operator", "barrier-tests")


class LookupLagging(Exception):
    pass


class Barrier:
    """The access_barrier port: records each position asked for; fails while `lagging`."""

    def __init__(self) -> None:
        self.asked: list[int] = []
        self.lagging = False

    def __call__(self, position: int) -> None:
        self.asked.append(position)
        if self.lagging:
            raise LookupLagging(f"the lookup is behind {position}")


@pytest.fixture
def barrier() -> Barrier:
    return Barrier()


@pytest.fixture
def app(barrier: Barrier) -> Lowrouter:
    app = Lowrouter(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}, pepper=b"test-pepper")
    app.access_barrier = barrier
    return app


def head(app: Lowrouter) -> int:
    return app.recorder.max_notification_id() or 0


def waits_for_its_last_event(
    app: Lowrouter, barrier: Barrier, command: Callable[[], object]
) -> None:
    before = head(app)
    barrier.asked.clear()
    command()
    assert head(app) > before, "the command recorded something"
    assert barrier.asked == [head(app)]


def opened(app: Lowrouter) -> tuple[UUID, UUID, UUID]:
    """An account, its first management key and an inference key."""
    account = app.open_account("acme", OPERATOR, credits=100)
    key = app.create_key(account.account.id, "prod", Scope(), OPERATOR)
    return account.account.id, account.management_key_id, key.key.id


def test_every_access_change_waits_for_the_lookup_to_reach_its_last_event(
    app: Lowrouter, barrier: Barrier
) -> None:
    waits_for_its_last_event(app, barrier, lambda: app.open_account("first", OPERATOR))
    account, mk, key = opened(app)
    changes: list[Callable[[], object]] = [
        lambda: app.create_key(account, "second", Scope(), OPERATOR),
        lambda: app.scope_key(key, Scope(region="eu"), OPERATOR),
        lambda: app.rename_key(key, "renamed", OPERATOR),
        lambda: app.update_key(key, OPERATOR, name="again"),
        lambda: app.rotate_key(key, OPERATOR, grace=timedelta(hours=1)),
        lambda: app.revoke_key(key, OPERATOR),
        lambda: management_keys.issue_management_key(app, account, OPERATOR),
        lambda: management_keys.revoke_management_key(app, account, mk, OPERATOR),
    ]
    for change in changes:
        waits_for_its_last_event(app, barrier, change)


def test_the_management_key_and_leak_use_cases_wait_alike(app: Lowrouter, barrier: Barrier) -> None:
    account, mk, key = opened(app)
    issued = management_keys.issue_management_key(app, account, OPERATOR)
    waits_for_its_last_event(
        app, barrier, lambda: management_keys.rotate_management_key(app, account, mk, OPERATOR)
    )
    waits_for_its_last_event(
        app,
        barrier,
        lambda: management_keys.revoke_management_key(app, account, issued.key.id, OPERATOR),
    )
    waits_for_its_last_event(
        app,
        barrier,
        lambda: handle_leak(app, key, "https://x.test/a", "content", OPERATOR, "revoke"),
    )
    # The same find reported again records nothing, so there is nothing to wait for.
    barrier.asked.clear()
    again = handle_leak(app, key, "https://x.test/a", "content", OPERATOR, "revoke")
    assert not again.recorded and not again.revoked_now and barrier.asked == []


def test_a_lagging_lookup_fails_a_change_of_access(app: Lowrouter, barrier: Barrier) -> None:
    account, mk, key = opened(app)
    barrier.lagging = True
    refused: list[Callable[[], object]] = [
        lambda: app.revoke_key(key, OPERATOR),
        lambda: management_keys.issue_management_key(app, account, OPERATOR),
        lambda: management_keys.rotate_management_key(app, account, mk, OPERATOR),
        lambda: app.open_account("second", OPERATOR),
    ]
    for change in refused:
        before = head(app)
        with pytest.raises(LookupLagging):
            change()
        assert head(app) > before, "the change itself was saved"


def test_a_lagging_lookup_after_a_new_token_is_a_warning_and_the_token_is_kept(
    app: Lowrouter, barrier: Barrier, caplog: pytest.LogCaptureFixture
) -> None:
    account, _, key = opened(app)
    barrier.lagging = True
    created = app.create_key(account, "new", Scope(), OPERATOR)
    rotated = app.rotate_key(key, OPERATOR)
    for issued in (created, rotated):
        assert issued.token.value and issued.warning == (
            "the key was created, but the gateway's key lookup has not caught up yet "
            "(LookupLagging); the key works once it has"
        )
        assert app.get_key(issued.key.id).token_hash  # saved, so the token works once caught up
    assert [r.getMessage() for r in caplog.records if r.name == "lowrouter.keys"] == [
        "a new key's lookup lags: LookupLagging",
        "a new key's lookup lags: LookupLagging",
    ]
    barrier.lagging = False
    assert app.create_key(account, "fine", Scope(), OPERATOR).warning is None


def test_nothing_recorded_waits_for_nothing(barrier: Barrier) -> None:
    barrier.lagging = True
    await_access(barrier, [])
    assert await_issued_access(barrier, []) is None
    assert barrier.asked == []
