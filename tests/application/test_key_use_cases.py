"""Every key and account use case of the Lowrouter application, on SQLite and on PostgreSQL."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from application import management_keys
from application.app import AccountExists, Lowrouter, account_id_for
from domain.accounts import Account
from domain.actor import Actor
from domain.errors import DomainError, InvalidName, KeyRevoked, NotFound
from domain.keys import ApiKey
from domain.rotation import MAX_GRACE
from domain.scope import Scope
from domain.tokens import (
    PREFIX_LENGTH,
    RANDOM_LENGTH,
    Token,
    TokenKind,
    hash_token,
    parse_token,
)
from infrastructure.persistence import build_app
from infrastructure.settings import Settings

ACTOR = Actor("operator", "cli:alice")
T0 = datetime(2026, 5, 4, 9, 30, tzinfo=UTC)
SCOPE = Scope(models=("openai/gpt-4o", "openai/gpt-4o-mini"), region="eu", daily_limit=5_000_000)


class FakeClock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def timed_ledger(settings: Settings, clock: FakeClock) -> Iterator[Lowrouter]:
    """The application on the parametrised store, with a clock the test controls."""
    app = build_app(settings, clock=clock)
    yield app
    app.close()


def stored_event_count(app: Lowrouter) -> int:
    return app.recorder.max_notification_id() or 0


def open_account(app: Lowrouter, name: str = "acme") -> UUID:
    return app.open_account(name, ACTOR).account.id


# Accounts -----------------------------------------------------------------------------------


def test_open_account_records_the_account_and_returns_its_management_token(
    ledger: Lowrouter,
) -> None:
    opened = ledger.open_account("acme", ACTOR)
    assert opened.account.name == "acme"
    assert opened.token.kind is TokenKind.MANAGEMENT
    assert parse_token(opened.token.value) == opened.token
    stored = ledger.get_account(opened.account.id)
    assert stored == opened.account
    entry = stored.management_keys[str(opened.management_key_id)]
    assert entry["token_hash"] == hash_token(ledger.pepper, opened.token)
    assert entry["display"] == opened.token.display
    assert entry["revoked"] is False and entry["name"] == "management key"
    assert stored.api_key_ids == []


def test_opening_an_account_with_a_taken_name_is_refused(ledger: Lowrouter) -> None:
    first = ledger.open_account("acme", ACTOR)
    events = stored_event_count(ledger)
    with pytest.raises(AccountExists, match="acme"):
        ledger.open_account("acme", ACTOR)
    assert stored_event_count(ledger) == events
    assert ledger.get_account(first.account.id) == first.account


def test_account_names_are_unique_regardless_of_case_and_outer_spaces(ledger: Lowrouter) -> None:
    ledger.open_account("Acme", ACTOR)
    for variant in ("acme", "ACME", " Acme "):
        with pytest.raises(AccountExists):
            ledger.open_account(variant, ACTOR)


@pytest.mark.parametrize("name", ["", " ", "x" * 65, "bad\nname"])
def test_opening_an_account_with_an_invalid_name_is_refused(ledger: Lowrouter, name: str) -> None:
    with pytest.raises(InvalidName):
        ledger.open_account(name, ACTOR)
    assert stored_event_count(ledger) == 0


def test_account_is_found_by_name_and_by_id(ledger: Lowrouter) -> None:
    account_id = open_account(ledger, "Acme Corp")
    open_account(ledger, "other")
    assert ledger.find_account("Acme Corp").id == account_id
    assert ledger.find_account("acme corp").id == account_id
    assert ledger.find_account(str(account_id)).id == account_id
    assert ledger.get_account(account_id).name == "Acme Corp"
    assert account_id_for("Acme Corp") == account_id


def test_unknown_accounts_are_not_found(ledger: Lowrouter) -> None:
    account_id = open_account(ledger)
    key = ledger.create_key(account_id, "ci", Scope(), ACTOR).key
    with pytest.raises(NotFound):
        ledger.find_account("nobody")
    with pytest.raises(NotFound):
        ledger.find_account(str(uuid4()))
    with pytest.raises(NotFound):
        ledger.get_account(uuid4())
    with pytest.raises(NotFound):
        ledger.get_account(key.id)  # a key is not an account


# Management keys ----------------------------------------------------------------------------


def test_issue_management_key_adds_an_active_management_key(ledger: Lowrouter) -> None:
    opened = ledger.open_account("acme", ACTOR)
    issued = management_keys.issue_management_key(ledger, opened.account.id, ACTOR)
    mk_id, token = issued.key.id, issued.token
    assert token.kind is TokenKind.MANAGEMENT
    assert token.value != opened.token.value
    keys = ledger.get_account(opened.account.id).management_keys
    assert set(keys) == {str(opened.management_key_id), str(mk_id)}
    assert keys[str(mk_id)]["token_hash"] == hash_token(ledger.pepper, token)
    assert keys[str(mk_id)]["revoked"] is False


def test_issue_management_key_for_an_unknown_account_is_not_found(ledger: Lowrouter) -> None:
    with pytest.raises(NotFound):
        management_keys.issue_management_key(ledger, uuid4(), ACTOR)
    assert stored_event_count(ledger) == 0


def test_revoke_management_key_marks_only_that_key_revoked(ledger: Lowrouter) -> None:
    opened = ledger.open_account("acme", ACTOR)
    issued = management_keys.issue_management_key(ledger, opened.account.id, ACTOR)
    mk_id, _ = issued.key.id, issued.token
    management_keys.revoke_management_key(ledger, opened.account.id, mk_id, ACTOR)
    keys = ledger.get_account(opened.account.id).management_keys
    assert keys[str(mk_id)]["revoked"] is True
    assert keys[str(opened.management_key_id)]["revoked"] is False


def test_revoking_a_management_key_twice_is_refused(ledger: Lowrouter) -> None:
    opened = ledger.open_account("acme", ACTOR)
    management_keys.revoke_management_key(
        ledger, opened.account.id, opened.management_key_id, ACTOR
    )
    events = stored_event_count(ledger)
    with pytest.raises(DomainError, match="already revoked"):
        management_keys.revoke_management_key(
            ledger, opened.account.id, opened.management_key_id, ACTOR
        )
    assert stored_event_count(ledger) == events


def test_revoking_an_unknown_management_key_is_not_found(ledger: Lowrouter) -> None:
    first = ledger.open_account("acme", ACTOR)
    other = ledger.open_account("other", ACTOR)
    with pytest.raises(NotFound):
        management_keys.revoke_management_key(ledger, first.account.id, uuid4(), ACTOR)
    with pytest.raises(NotFound):  # another account's management key
        management_keys.revoke_management_key(
            ledger, first.account.id, other.management_key_id, ACTOR
        )
    assert (
        ledger.get_account(other.account.id).management_keys[str(other.management_key_id)][
            "revoked"
        ]
        is False
    )


# Creating, listing and reading keys ---------------------------------------------------------


def test_create_key_stores_name_scope_and_only_the_tokens_hash(
    timed_ledger: Lowrouter, clock: FakeClock
) -> None:
    account_id = open_account(timed_ledger)
    issued = timed_ledger.create_key(account_id, "ci deploy", SCOPE, ACTOR)
    token, key = issued.token, issued.key
    assert token.kind is TokenKind.INFERENCE
    assert parse_token(token.value) == token
    assert key.account_id == account_id
    assert key.name == "ci deploy"
    assert key.scope == SCOPE
    assert key.token_hash == hash_token(timed_ledger.pepper, token)
    assert key.display == token.display
    assert (key.prefix, key.last4) == (token.value[:10], token.value[-4:])
    assert key.created_on == clock.now
    assert key.status_at(clock.now) == "active"
    assert key.predecessor_id is None and key.successor_id is None
    assert timed_ledger.get_key(key.id) == key
    assert timed_ledger.get_account(account_id).api_key_ids == [key.id]


def test_create_key_with_default_scope_allows_every_model(ledger: Lowrouter) -> None:
    account_id = open_account(ledger)
    key = ledger.create_key(account_id, "everything", Scope(), ACTOR).key
    assert ledger.get_key(key.id).scope == Scope()


def test_create_key_for_an_unknown_account_is_not_found(ledger: Lowrouter) -> None:
    with pytest.raises(NotFound):
        ledger.create_key(uuid4(), "ci", Scope(), ACTOR)
    assert stored_event_count(ledger) == 0


def test_create_key_with_an_invalid_name_is_refused_and_changes_nothing(
    ledger: Lowrouter,
) -> None:
    account_id = open_account(ledger)
    events = stored_event_count(ledger)
    with pytest.raises(InvalidName):
        ledger.create_key(account_id, " ", Scope(), ACTOR)
    assert stored_event_count(ledger) == events
    assert ledger.list_keys(account_id) == []


def test_list_keys_gives_the_accounts_keys_in_creation_order(ledger: Lowrouter) -> None:
    acme, other = open_account(ledger, "acme"), open_account(ledger, "other")
    first = ledger.create_key(acme, "first", Scope(), ACTOR).key
    foreign = ledger.create_key(other, "foreign", Scope(), ACTOR).key
    second = ledger.create_key(acme, "second", SCOPE, ACTOR).key
    assert [k.id for k in ledger.list_keys(acme)] == [first.id, second.id]
    assert [k.id for k in ledger.list_keys(other)] == [foreign.id]
    assert ledger.list_keys(acme) == [first, second]


def test_list_keys_of_an_unknown_account_is_not_found(ledger: Lowrouter) -> None:
    with pytest.raises(NotFound):
        ledger.list_keys(uuid4())


def test_get_key_of_another_account_is_not_found_when_the_account_is_given(
    ledger: Lowrouter,
) -> None:
    acme, other = open_account(ledger, "acme"), open_account(ledger, "other")
    key = ledger.create_key(acme, "ci", Scope(), ACTOR).key
    assert ledger.get_key(key.id, account_id=acme) == key
    assert ledger.get_key(key.id) == key
    with pytest.raises(NotFound):
        ledger.get_key(key.id, account_id=other)


def test_unknown_keys_and_non_keys_are_not_found(ledger: Lowrouter) -> None:
    account_id = open_account(ledger)
    with pytest.raises(NotFound):
        ledger.get_key(uuid4())
    with pytest.raises(NotFound):
        ledger.get_key(account_id)  # an account is not a key


def test_changes_through_another_account_are_not_found_and_change_nothing(
    ledger: Lowrouter,
) -> None:
    acme, other = open_account(ledger, "acme"), open_account(ledger, "other")
    key = ledger.create_key(acme, "ci", SCOPE, ACTOR).key
    events = stored_event_count(ledger)
    with pytest.raises(NotFound):
        ledger.scope_key(key.id, Scope(), ACTOR, account_id=other)
    with pytest.raises(NotFound):
        ledger.rename_key(key.id, "stolen", ACTOR, account_id=other)
    with pytest.raises(NotFound):
        ledger.revoke_key(key.id, ACTOR, account_id=other)
    with pytest.raises(NotFound):
        ledger.rotate_key(key.id, ACTOR, account_id=other)
    assert stored_event_count(ledger) == events
    assert ledger.get_key(key.id) == key
    assert ledger.list_keys(other) == []


# Scope and rename ---------------------------------------------------------------------------


def test_scope_key_replaces_the_keys_scope(timed_ledger: Lowrouter, clock: FakeClock) -> None:
    account_id = open_account(timed_ledger)
    key = timed_ledger.create_key(account_id, "ci", SCOPE, ACTOR).key
    clock.advance(timedelta(minutes=1))
    narrower = Scope(models=("openai/gpt-4o-mini",), region="eu", daily_limit=1_000_000)
    scoped = timed_ledger.scope_key(key.id, narrower, ACTOR, account_id=account_id)
    assert scoped.scope == narrower
    assert scoped.version == key.version + 1
    assert scoped.modified_on == clock.now
    assert timed_ledger.get_key(key.id) == scoped
    cleared = timed_ledger.scope_key(key.id, Scope(), ACTOR)
    assert timed_ledger.get_key(key.id).scope == Scope() == cleared.scope


def test_rename_key_changes_only_the_name(ledger: Lowrouter) -> None:
    account_id = open_account(ledger)
    key = ledger.create_key(account_id, "old name", SCOPE, ACTOR).key
    renamed = ledger.rename_key(key.id, "new name", ACTOR, account_id=account_id)
    assert renamed.name == "new name"
    stored = ledger.get_key(key.id)
    assert stored == renamed
    assert (stored.scope, stored.token_hash, stored.display) == (
        key.scope,
        key.token_hash,
        key.display,
    )


def test_rename_to_an_invalid_name_is_refused_and_changes_nothing(ledger: Lowrouter) -> None:
    account_id = open_account(ledger)
    key = ledger.create_key(account_id, "ci", Scope(), ACTOR).key
    with pytest.raises(InvalidName):
        ledger.rename_key(key.id, "x" * 65, ACTOR)
    assert ledger.get_key(key.id) == key


# Rotation -----------------------------------------------------------------------------------


def test_rotate_key_creates_a_linked_successor_with_the_same_name_and_scope(
    timed_ledger: Lowrouter, clock: FakeClock
) -> None:
    account_id = open_account(timed_ledger)
    old_issue = timed_ledger.create_key(account_id, "ci", SCOPE, ACTOR)
    clock.advance(timedelta(hours=1))
    rotated_at = clock.now
    issued = timed_ledger.rotate_key(
        old_issue.key.id, ACTOR, grace=timedelta(minutes=10), account_id=account_id
    )
    successor, token = issued.key, issued.token
    old = timed_ledger.get_key(old_issue.key.id)
    assert token.value != old_issue.token.value
    assert token.kind is TokenKind.INFERENCE
    assert successor.token_hash == hash_token(timed_ledger.pepper, token)
    assert successor.token_hash != old.token_hash
    assert (successor.name, successor.scope) == (old.name, old.scope) == ("ci", SCOPE)
    assert successor.account_id == account_id
    assert successor.predecessor_id == old.id
    assert old.successor_id == successor.id
    assert successor.successor_id is None
    assert old.grace_deadline == rotated_at + timedelta(minutes=10)
    assert successor.created_on == rotated_at
    assert timed_ledger.get_key(successor.id) == successor
    assert [k.id for k in timed_ledger.list_keys(account_id)] == [old.id, successor.id]


def test_rotated_key_works_until_its_grace_deadline_and_not_after(
    timed_ledger: Lowrouter, clock: FakeClock
) -> None:
    account_id = open_account(timed_ledger)
    old_id = timed_ledger.create_key(account_id, "ci", SCOPE, ACTOR).key.id
    successor_id = timed_ledger.rotate_key(old_id, ACTOR, grace=timedelta(hours=2)).key.id
    deadline = T0 + timedelta(hours=2)

    def statuses() -> tuple[str, str]:
        now = clock()
        return (
            timed_ledger.get_key(old_id).status_at(now),
            timed_ledger.get_key(successor_id).status_at(now),
        )

    assert statuses() == ("rotating", "active")
    clock.advance(timedelta(hours=2) - timedelta(microseconds=1))
    assert statuses() == ("rotating", "active")
    clock.now = deadline
    assert statuses() == ("revoked", "active")
    clock.advance(timedelta(days=1))
    assert statuses() == ("revoked", "active")


def test_rotation_without_grace_ends_the_old_key_at_once(
    timed_ledger: Lowrouter, clock: FakeClock
) -> None:
    account_id = open_account(timed_ledger)
    old_id = timed_ledger.create_key(account_id, "ci", Scope(), ACTOR).key.id
    timed_ledger.rotate_key(old_id, ACTOR)
    old = timed_ledger.get_key(old_id)
    assert old.grace_deadline == clock.now
    assert old.status_at(clock.now) == "revoked"


@pytest.mark.parametrize(
    "grace", [timedelta(seconds=-1), MAX_GRACE + timedelta(seconds=1), timedelta(days=365)]
)
def test_rotation_with_a_grace_outside_zero_to_thirty_days_is_refused(
    ledger: Lowrouter, grace: timedelta
) -> None:
    account_id = open_account(ledger)
    key = ledger.create_key(account_id, "ci", Scope(), ACTOR).key
    events = stored_event_count(ledger)
    with pytest.raises(DomainError, match="grace"):
        ledger.rotate_key(key.id, ACTOR, grace=grace)
    assert stored_event_count(ledger) == events
    assert ledger.get_key(key.id) == key


def test_rotation_with_the_longest_grace_is_accepted(
    timed_ledger: Lowrouter, clock: FakeClock
) -> None:
    account_id = open_account(timed_ledger)
    key_id = timed_ledger.create_key(account_id, "ci", Scope(), ACTOR).key.id
    timed_ledger.rotate_key(key_id, ACTOR, grace=MAX_GRACE)
    assert timed_ledger.get_key(key_id).grace_deadline == clock.now + timedelta(days=30)


def test_rotating_a_key_twice_is_refused(ledger: Lowrouter) -> None:
    account_id = open_account(ledger)
    key_id = ledger.create_key(account_id, "ci", Scope(), ACTOR).key.id
    successor = ledger.rotate_key(key_id, ACTOR, grace=timedelta(hours=1)).key
    events = stored_event_count(ledger)
    with pytest.raises(DomainError, match="already rotated"):
        ledger.rotate_key(key_id, ACTOR)
    assert stored_event_count(ledger) == events
    assert ledger.get_key(key_id).successor_id == successor.id
    assert len(ledger.list_keys(account_id)) == 2
    # The successor itself can be rotated.
    third = ledger.rotate_key(successor.id, ACTOR).key
    assert third.predecessor_id == successor.id


def test_a_revoked_key_cannot_be_rotated(ledger: Lowrouter) -> None:
    account_id = open_account(ledger)
    key_id = ledger.create_key(account_id, "ci", Scope(), ACTOR).key.id
    ledger.revoke_key(key_id, ACTOR)
    events = stored_event_count(ledger)
    with pytest.raises(KeyRevoked):
        ledger.rotate_key(key_id, ACTOR)
    assert stored_event_count(ledger) == events
    assert len(ledger.list_keys(account_id)) == 1


# Revocation ---------------------------------------------------------------------------------


def test_revoke_key_records_when_and_why(timed_ledger: Lowrouter, clock: FakeClock) -> None:
    account_id = open_account(timed_ledger)
    key = timed_ledger.create_key(account_id, "ci", SCOPE, ACTOR).key
    clock.advance(timedelta(minutes=3))
    revoked = timed_ledger.revoke_key(key.id, ACTOR, reason="leaked in CI logs")
    assert revoked.revoked_at == clock.now
    assert revoked.revoke_reason == "leaked in CI logs"
    stored = timed_ledger.get_key(key.id)
    assert stored == revoked
    assert stored.status_at(clock.now) == "revoked"


def test_revoking_a_key_twice_is_refused(ledger: Lowrouter) -> None:
    account_id = open_account(ledger)
    key_id = ledger.create_key(account_id, "ci", Scope(), ACTOR).key.id
    first = ledger.revoke_key(key_id, ACTOR, reason="first")
    events = stored_event_count(ledger)
    with pytest.raises(KeyRevoked):
        ledger.revoke_key(key_id, ACTOR, reason="second")
    assert stored_event_count(ledger) == events
    assert ledger.get_key(key_id) == first


def test_a_revoked_key_cannot_be_scoped_or_renamed(ledger: Lowrouter) -> None:
    account_id = open_account(ledger)
    key_id = ledger.create_key(account_id, "ci", SCOPE, ACTOR).key.id
    revoked = ledger.revoke_key(key_id, ACTOR)
    with pytest.raises(KeyRevoked):
        ledger.scope_key(key_id, Scope(), ACTOR)
    with pytest.raises(KeyRevoked):
        ledger.rename_key(key_id, "renamed", ACTOR)
    assert ledger.get_key(key_id) == revoked


def test_a_rotating_key_can_be_revoked_before_its_grace_ends(
    timed_ledger: Lowrouter, clock: FakeClock
) -> None:
    account_id = open_account(timed_ledger)
    old_id = timed_ledger.create_key(account_id, "ci", Scope(), ACTOR).key.id
    successor_id = timed_ledger.rotate_key(old_id, ACTOR, grace=timedelta(days=1)).key.id
    clock.advance(timedelta(minutes=5))
    timed_ledger.revoke_key(old_id, ACTOR, reason="leaked")
    assert timed_ledger.get_key(old_id).status_at(clock.now) == "revoked"
    assert timed_ledger.get_key(successor_id).status_at(clock.now) == "active"


# Access barrier and what is stored -----------------------------------------------------------


def test_access_changing_commands_pass_their_last_notification_to_the_barrier(
    ledger: Lowrouter,
) -> None:
    positions: list[int] = []
    ledger.access_barrier = positions.append

    def last_position() -> int:
        position = stored_event_count(ledger)
        assert positions[-1] == position
        return position

    account_id = ledger.open_account("acme", ACTOR).account.id
    seen = [last_position()]
    key_id = ledger.create_key(account_id, "ci", Scope(), ACTOR).key.id
    seen.append(last_position())
    ledger.scope_key(key_id, SCOPE, ACTOR)
    seen.append(last_position())
    ledger.rename_key(key_id, "renamed", ACTOR)
    seen.append(last_position())
    successor_id = ledger.rotate_key(key_id, ACTOR).key.id
    seen.append(last_position())
    ledger.revoke_key(successor_id, ACTOR)
    seen.append(last_position())
    issued = management_keys.issue_management_key(ledger, account_id, ACTOR)
    mk_id, _ = issued.key.id, issued.token
    seen.append(last_position())
    management_keys.revoke_management_key(ledger, account_id, mk_id, ACTOR)
    seen.append(last_position())
    assert positions == seen
    assert seen == sorted(set(seen))


def _secrets_of(token: Token) -> list[str]:
    random_part = token.value[PREFIX_LENGTH : PREFIX_LENGTH + RANDOM_LENGTH]
    return [token.value, random_part] + [random_part[i : i + 12] for i in range(RANDOM_LENGTH - 11)]


def test_no_token_plaintext_is_ever_stored_in_an_event(ledger: Lowrouter) -> None:
    opened = ledger.open_account("acme", ACTOR, credits=5_000_000)
    tokens: list[Token] = [opened.token]
    issued = ledger.create_key(opened.account.id, "ci", SCOPE, ACTOR)
    tokens.append(issued.token)
    ledger.scope_key(issued.key.id, Scope(), ACTOR)
    ledger.rename_key(issued.key.id, "renamed", ACTOR)
    rotated = ledger.rotate_key(issued.key.id, ACTOR, grace=timedelta(minutes=1))
    tokens.append(rotated.token)
    ledger.revoke_key(rotated.key.id, ACTOR, reason="test")
    issued = management_keys.issue_management_key(ledger, opened.account.id, ACTOR)
    mk_id, mk_token = issued.key.id, issued.token
    tokens.append(mk_token)
    management_keys.revoke_management_key(ledger, opened.account.id, mk_id, ACTOR)
    ledger.create_key(opened.account.id, "second", Scope(), ACTOR)

    notifications = ledger.recorder.select_notifications(start=1, limit=10000)
    assert len(notifications) == stored_event_count(ledger) >= 12
    states = [n.state.decode("utf-8") for n in notifications]
    everything = "\n".join(states)
    for token in tokens:
        # The hash is there (so this scan does look at the right data) ...
        assert hash_token(ledger.pepper, token) in everything
        # ... and no part of the token's randomness is.
        for secret in _secrets_of(token):
            assert all(secret not in state for state in states), "token material stored"


def test_keys_read_by_a_second_application_on_the_same_store_are_equal(
    settings: Settings, ledger: Lowrouter
) -> None:
    account_id = open_account(ledger)
    key_id = ledger.create_key(account_id, "ci", SCOPE, ACTOR).key.id
    ledger.rename_key(key_id, "renamed", ACTOR)
    successor_id = ledger.rotate_key(key_id, ACTOR, grace=timedelta(hours=1)).key.id
    ledger.revoke_key(successor_id, ACTOR)
    other = build_app(settings)
    try:
        for some_id in (key_id, successor_id):
            replayed = other.get_key(some_id)
            assert isinstance(replayed, ApiKey)
            assert replayed == ledger.get_key(some_id)
        account = other.get_account(account_id)
        assert isinstance(account, Account)
        assert account == ledger.get_account(account_id)
    finally:
        other.close()


def test_the_application_has_the_snapshot_store_it_declares(ledger: Lowrouter) -> None:
    assert Lowrouter.is_snapshotting_enabled is True
    assert ledger.snapshots is not None
