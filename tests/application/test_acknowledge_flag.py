"""The acknowledge-flag use case on eventsourcing's in-memory store: it saves the event once,
keeps a key of another account out of reach, and a replayed key knows what was acknowledged."""

from uuid import UUID, uuid4

import pytest

from application.app import Lowrouter
from application.flags import acknowledge_flag
from domain.actor import Actor
from domain.errors import NotFound
from domain.flags import NEW_USER_AGENT
from domain.keys import ApiKey
from domain.scope import Scope

OWNER = Actor("dashboard", "session of lr-mk-AbCd…wXyZ")


@pytest.fixture
def app() -> Lowrouter:
    return Lowrouter(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}, pepper=b"test-pepper")


def key_of(app: Lowrouter, name: str) -> tuple[UUID, UUID]:
    account = app.open_account(name, OWNER).account.id
    return account, app.create_key(account, "prod", Scope(), OWNER).key.id


def test_the_acknowledgement_is_saved_once_and_replays(app: Lowrouter) -> None:
    account, key_id = key_of(app, "acme")
    assert acknowledge_flag(app, key_id, NEW_USER_AGENT, "curl/8", OWNER, account_id=account)
    assert not acknowledge_flag(app, key_id, NEW_USER_AGENT, "curl/8", OWNER, account_id=account)
    events = [e for e in app.events.get(key_id) if isinstance(e, ApiKey.FlagAcknowledged)]
    assert len(events) == 1
    assert app.get_key(key_id).acknowledged_flags == {(NEW_USER_AGENT, "curl/8")}


def test_another_accounts_key_is_not_found_and_nothing_is_saved(app: Lowrouter) -> None:
    _, key_id = key_of(app, "acme")
    other, _ = key_of(app, "globex")
    with pytest.raises(NotFound):
        acknowledge_flag(app, key_id, NEW_USER_AGENT, "curl/8", OWNER, account_id=other)
    with pytest.raises(NotFound):
        acknowledge_flag(app, uuid4(), NEW_USER_AGENT, "curl/8", OWNER)
    assert app.get_key(key_id).acknowledged_flags == set()
