"""The ApiKey lifecycle: unit rules of the aggregate, then a stateful model-based test that drives
create/scope/rename/rotate/revoke through the Lowrouter application, in any order (refused commands
included), and replays every key from the store on a separate application instance."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar
from uuid import UUID, uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from application.app import Lowrouter
from domain.actor import Actor
from domain.errors import DomainError, InvalidName, KeyRevoked, NotFound
from domain.keys import ApiKey
from domain.rotation import MAX_GRACE
from domain.scope import Scope
from domain.tokens import hash_token
from infrastructure.persistence import build_app, eventsourcing_env
from infrastructure.settings import load_settings
from tests.support.runs import examples

ACTOR = Actor("operator", "cli:test")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TICK = timedelta(microseconds=1)
PEPPER = b"lifecycle-test-pepper"


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


# Strategies ---------------------------------------------------------------------------------

printable = st.characters(categories=["L", "M", "N", "P", "S"]) | st.just(" ")
valid_names = st.text(printable, min_size=1, max_size=64).filter(lambda n: n.strip() != "")
invalid_names = st.one_of(
    st.just(""),
    st.text(" ", min_size=1, max_size=64),  # blank
    st.text(printable, min_size=65, max_size=80),  # too long
    st.tuples(
        st.text(printable, max_size=20),
        st.sampled_from(["\n", "\t", "\x00", "\x1b", "\u2028", "\u00a0", "\u200b"]),
        st.text(printable, max_size=20),
    ).map("".join),  # not printable
)
names = st.one_of(valid_names.map(lambda n: (n, True)), invalid_names.map(lambda n: (n, False)))
model_ids = st.sampled_from(
    ["openai/gpt-4o", "openai/gpt-4o-mini", "anthropic/claude", "lowrouter/echo"]
)
scopes = st.builds(
    Scope,
    models=st.none() | st.lists(model_ids, min_size=1, max_size=3, unique=True).map(tuple),
    region=st.sampled_from([None, "us", "eu", "ap-south-1"]),
    daily_limit=st.none() | st.integers(0, 10**9),
)
reasons = st.text(max_size=250)
graces = st.sampled_from([-1, 0, 1, 60, 3600, 86400, 30 * 86400, 30 * 86400 + 1]).map(
    lambda s: timedelta(seconds=s)
)
advances = st.sampled_from([0, 1, 59, 60, 3600, 86400, 7 * 86400]).map(
    lambda s: timedelta(seconds=s)
)


# Unit rules of the aggregate ----------------------------------------------------------------


def new_key(name: str = "ci", scope: Scope | None = None, at: datetime = T0) -> ApiKey:
    return ApiKey.create(
        key_id=uuid4(),
        account_id=uuid4(),
        name=name,
        token_hash="ab" * 32,
        prefix="lr-sk-AbCd",
        last4="wXyZ",
        scope=scope or Scope(),
        actor=ACTOR,
        at=at,
    )


def revoked_key() -> ApiKey:
    key = new_key()
    key.revoke("leaked", ACTOR, T0 + timedelta(minutes=1))
    return key


def test_new_key_is_active_with_its_name_scope_and_display() -> None:
    scope = Scope(models=("openai/gpt-4o",), region="eu", daily_limit=5_000_000)
    key = new_key("ci deploy", scope)
    assert key.name == "ci deploy"
    assert key.scope == scope
    assert key.display == "lr-sk-AbCd…wXyZ"
    assert key.status_at(T0) == "active"
    assert key.status_at(T0 + timedelta(days=3650)) == "active"
    assert (key.successor_id, key.grace_deadline, key.revoked_at) == (None, None, None)
    assert key.version == 1
    assert key.created_on == T0


CHANGES: dict[str, Callable[[ApiKey, datetime], None]] = {
    "scope": lambda key, at: key.rescope(Scope(region="us"), ACTOR, at),
    "rename": lambda key, at: key.rename("new name", ACTOR, at),
    "rotate": lambda key, at: key.rotate(uuid4(), at + timedelta(hours=1), ACTOR, at),
    "revoke": lambda key, at: key.revoke("again", ACTOR, at),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_revoked_key_cannot_be_changed(change: str) -> None:
    key = revoked_key()
    before = dict(key.__dict__)
    pending = len(key.collect_events())
    assert pending == 2
    with pytest.raises(KeyRevoked):
        CHANGES[change](key, T0 + timedelta(hours=1))
    assert key.collect_events() == []
    after = dict(key.__dict__)
    before.pop("_pending_events")
    after.pop("_pending_events")
    assert after == before


def test_revoked_key_cannot_be_renamed() -> None:
    key = revoked_key()
    with pytest.raises(KeyRevoked):
        key.rename("renamed", ACTOR, T0 + timedelta(hours=1))
    assert key.name == "ci"


def test_revoked_key_cannot_be_scoped() -> None:
    key = revoked_key()
    with pytest.raises(KeyRevoked):
        key.rescope(Scope(region="us"), ACTOR, T0 + timedelta(hours=1))
    assert key.scope == Scope()


def test_revoked_key_cannot_be_rotated() -> None:
    key = revoked_key()
    with pytest.raises(KeyRevoked):
        key.rotate(uuid4(), T0 + timedelta(hours=1), ACTOR, T0 + timedelta(hours=1))
    assert key.successor_id is None


def test_revoking_twice_is_refused_and_keeps_the_first_revocation() -> None:
    key = revoked_key()
    first = key.revoked_at
    with pytest.raises(KeyRevoked, match="already revoked"):
        key.revoke("again", ACTOR, T0 + timedelta(hours=2))
    assert key.revoked_at == first
    assert key.revoke_reason == "leaked"


def test_revoke_records_its_time_and_a_reason_of_at_most_200_characters() -> None:
    key = new_key()
    at = T0 + timedelta(minutes=5)
    key.revoke("x" * 500, ACTOR, at)
    assert key.revoked_at == at
    assert key.revoke_reason == "x" * 200
    assert key.status_at(at) == "revoked"
    assert key.status_at(at - TICK) == "revoked"  # status follows the event, not the clock


def test_rescope_replaces_the_whole_scope() -> None:
    key = new_key(scope=Scope(models=("a",), region="eu", daily_limit=1))
    key.rescope(Scope(daily_limit=7), ACTOR, T0 + TICK)
    assert key.scope == Scope(daily_limit=7)
    assert key.modified_on == T0 + TICK


@given(valid_names)
def test_names_of_1_to_64_printable_characters_are_accepted(name: str) -> None:
    key = new_key(name)
    assert key.name == name
    key.rename(name[::-1] if name[::-1].strip() else name, ACTOR, T0 + TICK)
    assert key.version == 2


@pytest.mark.parametrize("name", ["a", "x" * 64, "  padded  ", "clé d'équipe", "键", "a-b_c.d/e"])
def test_boundary_and_unicode_names_are_accepted(name: str) -> None:
    assert new_key(name).name == name


@given(invalid_names)
def test_names_outside_the_rule_are_refused_on_create_and_rename(name: str) -> None:
    with pytest.raises(InvalidName):
        new_key(name)
    key = new_key()
    key.collect_events()
    with pytest.raises(InvalidName):
        key.rename(name, ACTOR, T0 + TICK)
    assert key.name == "ci"
    assert key.collect_events() == []


@pytest.mark.parametrize("name", [None, 42, b"bytes", ["list"]])
def test_a_name_must_be_a_string(name: Any) -> None:
    with pytest.raises(InvalidName):
        new_key(name)


def test_rotating_twice_is_refused() -> None:
    key = new_key()
    successor = uuid4()
    key.rotate(successor, T0 + timedelta(hours=1), ACTOR, T0)
    version = key.version
    with pytest.raises(DomainError, match="already rotated") as caught:
        key.rotate(uuid4(), T0 + timedelta(hours=2), ACTOR, T0 + TICK)
    assert not isinstance(caught.value, KeyRevoked)
    assert key.successor_id == successor
    assert key.grace_deadline == T0 + timedelta(hours=1)
    assert key.version == version


def test_status_is_rotating_until_the_grace_deadline_then_revoked() -> None:
    key = new_key()
    rotated_at = T0 + timedelta(minutes=1)
    deadline = rotated_at + timedelta(hours=1)
    assert key.status_at(rotated_at) == "active"
    key.rotate(uuid4(), deadline, ACTOR, rotated_at)
    assert key.status_at(rotated_at) == "rotating"
    assert key.status_at(deadline - TICK) == "rotating"
    assert key.status_at(deadline) == "revoked"
    assert key.status_at(deadline + timedelta(days=1)) == "revoked"
    assert key.revoked_at is None  # the deadline ends the key without another event


def test_rotation_with_no_grace_ends_the_key_at_once() -> None:
    key = new_key()
    key.rotate(uuid4(), T0, ACTOR, T0)
    assert key.status_at(T0) == "revoked"
    assert key.status_at(T0 - TICK) == "rotating"


def test_a_grace_deadline_in_the_past_is_clamped_to_the_rotation_time() -> None:
    key = new_key()
    at = T0 + timedelta(hours=1)
    key.rotate(uuid4(), T0 - timedelta(days=1), ACTOR, at)
    assert key.grace_deadline == at


def test_a_rotating_key_can_be_revoked_before_its_grace_ends() -> None:
    key = new_key()
    key.rotate(uuid4(), T0 + timedelta(days=1), ACTOR, T0)
    revoked_at = T0 + timedelta(minutes=1)
    key.revoke("leaked during rotation", ACTOR, revoked_at)
    assert key.status_at(revoked_at) == "revoked"
    assert key.status_at(revoked_at + timedelta(minutes=1)) == "revoked"


def test_replaying_a_keys_events_rebuilds_an_equal_key() -> None:
    key = new_key("first", Scope(models=("openai/gpt-4o",)))
    key.rescope(Scope(region="eu", daily_limit=10), ACTOR, T0 + 1 * TICK)
    key.rename("second", ACTOR, T0 + 2 * TICK)
    key.rotate(uuid4(), T0 + timedelta(hours=1), ACTOR, T0 + 3 * TICK)
    key.revoke("done", ACTOR, T0 + 4 * TICK)
    events = key.collect_events()
    assert [type(e).__name__ for e in events] == [
        "Created",
        "Scoped",
        "Renamed",
        "Rotated",
        "Revoked",
    ]
    replayed: Any = None
    for event in events:
        replayed = event.mutate(replayed)
    assert replayed == key
    assert replayed is not key


# Model-based test through the application --------------------------------------------------


@dataclass
class KeyModel:
    """What a key should be, kept by the test independently of the aggregate."""

    account_id: UUID
    name: str
    scope: Scope
    token_hash: str
    prefix: str
    last4: str
    created_at: datetime
    version: int = 1
    predecessor_id: UUID | None = None
    successor_id: UUID | None = None
    grace_deadline: datetime | None = None
    revoked_at: datetime | None = None
    revoke_reason: str | None = None

    def status(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.grace_deadline is not None:
            return "rotating" if now < self.grace_deadline else "revoked"
        return "active"

    def grace_expired(self, now: datetime) -> bool:
        """Ended by its rotation deadline rather than by a Revoked event."""
        return self.revoked_at is None and self.status(now) == "revoked"


class KeyLifecycle(RuleBasedStateMachine):
    """Bound to a store by `lifecycle_on` (class attributes), so one machine runs on any store."""

    app: ClassVar[Lowrouter]
    replica: ClassVar[Lowrouter]  # a second application on the same store, without a cache
    clock: ClassVar[FakeClock]

    keys = Bundle("keys")

    def __init__(self) -> None:
        super().__init__()
        opened = self.app.open_account(f"lifecycle {uuid4().hex}", ACTOR)
        self.account_id = opened.account.id
        self.models: dict[UUID, KeyModel] = {}
        self.live: dict[UUID, ApiKey] = {}

    # Commands ---------------------------------------------------------------------------

    @initialize(target=keys, name=valid_names.map(lambda n: (n, True)), scope=scopes)
    def first_key(self, name: tuple[str, bool], scope: Scope) -> Any:
        return self.create(name, scope)

    @rule(target=keys, name=names, scope=scopes)
    def create(self, name: tuple[str, bool], scope: Scope) -> Any:
        text, valid = name
        if not valid:
            with pytest.raises(InvalidName):
                self.app.create_key(self.account_id, text, scope, ACTOR)
            return multiple()
        issued = self.app.create_key(self.account_id, text, scope, ACTOR)
        self.models[issued.key.id] = KeyModel(
            account_id=self.account_id,
            name=text,
            scope=scope,
            token_hash=hash_token(PEPPER, issued.token),
            prefix=issued.token.value[:10],
            last4=issued.token.value[-4:],
            created_at=self.clock(),
        )
        self.live[issued.key.id] = issued.key
        return issued.key.id

    def _change(
        self,
        key_id: UUID,
        command: Callable[[], ApiKey],
        update: Callable[[KeyModel], None],
        also_refused_by: type[DomainError] | None = None,
    ) -> None:
        model = self.models[key_id]
        # A key whose rotation grace has ended is revoked in effect: it cannot be changed either.
        if model.revoked_at is not None or model.grace_expired(self.clock()):
            refusals: tuple[type[DomainError], ...] = (KeyRevoked,)
            if also_refused_by is not None:
                refusals += (also_refused_by,)  # both rules apply; either refusal is right
            with pytest.raises(refusals):
                command()
            return
        if also_refused_by is not None:
            with pytest.raises(also_refused_by):
                command()
            return
        changed = command()
        update(model)
        model.version += 1
        self.live[key_id] = changed

    @rule(key_id=keys, scope=scopes)
    def scope(self, key_id: UUID, scope: Scope) -> None:
        def update(model: KeyModel) -> None:
            model.scope = scope

        self._change(key_id, lambda: self.app.scope_key(key_id, scope, ACTOR), update)

    @rule(key_id=keys, name=names)
    def rename(self, key_id: UUID, name: tuple[str, bool]) -> None:
        text, valid = name

        def update(model: KeyModel) -> None:
            model.name = text

        self._change(
            key_id,
            lambda: self.app.rename_key(key_id, text, ACTOR, account_id=self.account_id),
            update,
            also_refused_by=None if valid else InvalidName,
        )

    @rule(key_id=keys, reason=reasons)
    def revoke(self, key_id: UUID, reason: str) -> None:
        now = self.clock()

        def update(model: KeyModel) -> None:
            model.revoked_at = now
            model.revoke_reason = reason[:200]

        self._change(key_id, lambda: self.app.revoke_key(key_id, ACTOR, reason), update)

    @rule(target=keys, key_id=keys, grace=graces)
    def rotate(self, key_id: UUID, grace: timedelta) -> Any:
        model = self.models[key_id]
        now = self.clock()
        version = model.version
        if not timedelta(0) <= grace <= MAX_GRACE:
            with pytest.raises(DomainError, match="grace"):
                self.app.rotate_key(key_id, ACTOR, grace)
            return multiple()
        if model.revoked_at is not None:
            with pytest.raises(KeyRevoked):
                self.app.rotate_key(key_id, ACTOR, grace)
            return multiple()
        if model.successor_id is not None:
            with pytest.raises(DomainError):
                self.app.rotate_key(key_id, ACTOR, grace)
            return multiple()
        issued = self.app.rotate_key(key_id, ACTOR, grace)
        successor = issued.key
        model.successor_id = successor.id
        model.grace_deadline = now + grace
        model.version = version + 1
        self.live[key_id] = self.app.get_key(key_id)
        self.models[successor.id] = KeyModel(
            account_id=self.account_id,
            name=model.name,
            scope=model.scope,
            token_hash=hash_token(PEPPER, issued.token),
            prefix=issued.token.value[:10],
            last4=issued.token.value[-4:],
            created_at=now,
            predecessor_id=key_id,
        )
        self.live[successor.id] = successor
        return successor.id

    @rule(delta=advances)
    def time_passes(self, delta: timedelta) -> None:
        self.clock.advance(delta)

    @rule(key_id=keys)
    def another_account_cannot_see_or_change_the_key(self, key_id: UUID) -> None:
        stranger = uuid4()
        with pytest.raises(NotFound):
            self.app.get_key(key_id, account_id=stranger)
        with pytest.raises(NotFound):
            self.app.rename_key(key_id, "hijacked", ACTOR, account_id=stranger)
        with pytest.raises(NotFound):
            self.app.revoke_key(key_id, ACTOR, account_id=stranger)

    # Invariants -------------------------------------------------------------------------

    @invariant()
    def keys_match_the_model_and_replay_identically_from_the_store(self) -> None:
        now = self.clock()
        listed = self.app.list_keys(self.account_id)
        assert [key.id for key in listed] == list(self.models)  # creation order
        assert len({key.token_hash for key in listed}) == len(listed)
        for key in listed:
            model, live = self.models[key.id], self.live[key.id]
            assert key == live
            assert live.account_id == model.account_id
            assert live.name == model.name
            assert live.scope == model.scope
            assert live.token_hash == model.token_hash
            assert (live.prefix, live.last4) == (model.prefix, model.last4)
            assert live.display == f"{model.prefix}…{model.last4}"
            assert live.created_on == model.created_at
            assert live.version == model.version
            assert live.predecessor_id == model.predecessor_id
            assert live.successor_id == model.successor_id
            assert live.grace_deadline == model.grace_deadline
            assert live.revoked_at == model.revoked_at
            assert live.revoke_reason == model.revoke_reason
            assert live.status_at(now) == model.status(now)
            replayed = self.replica.repository.get(key.id)
            assert replayed is not live
            assert replayed == live
            assert replayed.status_at(now) == model.status(now)
        for key_id, model in self.models.items():  # rotation links are two-way
            if model.successor_id is not None:
                assert self.live[model.successor_id].predecessor_id == key_id
            if model.predecessor_id is not None:
                assert self.live[model.predecessor_id].successor_id == key_id


def lifecycle_on(app: Lowrouter, replica: Lowrouter, clock: FakeClock) -> type[KeyLifecycle]:
    assert replica is not app
    assert replica.repository.cache is None  # every get replays from the store
    return type(
        "KeyLifecycleMachine", (KeyLifecycle,), {"app": app, "replica": replica, "clock": clock}
    )


def memory_replica_of(app: Lowrouter) -> Lowrouter:
    """A second application instance reading the first one's in-memory event store."""
    recorder = app.recorder

    class Replica(Lowrouter):
        name = "lowrouter"

        def construct_recorder(self) -> Any:
            return recorder

    return Replica(eventsourcing_env("memory://"), pepper=app.pepper)


LIFECYCLE_SETTINGS: dict[str, Any] = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much],
}


def test_key_lifecycle_state_machine_in_memory() -> None:
    clock = FakeClock()
    app = Lowrouter(eventsourcing_env("memory://"), pepper=PEPPER, clock=clock)
    replica = memory_replica_of(app)
    run_state_machine_as_test(
        lifecycle_on(app, replica, clock),
        settings=settings(max_examples=examples(100), stateful_step_count=40, **LIFECYCLE_SETTINGS),
    )


def test_key_lifecycle_state_machine_on_a_real_store(database_url: str, tmp_path: Path) -> None:
    store_settings = load_settings(
        {"LOWROUTER_TOKEN_PEPPER": PEPPER.decode(), "LOWROUTER_DATA_DIR": str(tmp_path)},
        database_url=database_url,
    )
    clock = FakeClock()
    app = build_app(store_settings, clock=clock)
    replica = build_app(store_settings, clock=clock)
    try:
        run_state_machine_as_test(
            lifecycle_on(app, replica, clock),
            settings=settings(max_examples=15, stateful_step_count=40, **LIFECYCLE_SETTINGS),
        )
    finally:
        replica.close()
        app.close()
