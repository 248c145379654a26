"""The gateway's lookup record and the key aggregate always give the same answer (one access
policy, domain.access): whatever was done to a key, at any moment and from any address."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from application.app import Lowrouter
from domain.actor import Actor
from domain.errors import DomainError
from domain.policy import KeyPolicy
from domain.scope import Scope
from domain.tokens import hash_token
from infrastructure.runtime import Runtime, open_runtime
from infrastructure.settings import load_settings
from projections.lookup import find_key
from tests.support.stores import PEPPER

ACTOR = Actor("operator", "test")
T0 = datetime(2031, 5, 1, 12, 0, tzinfo=UTC)
ADDRESSES = [None, "203.0.113.5", "198.51.100.7", "2001:db8::5", "::ffff:203.0.113.9"]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, Clock]]:
    path: Path = tmp_path_factory.mktemp("agree")
    clock = Clock()
    settings_ = load_settings(
        {"LOWROUTER_TOKEN_PEPPER": PEPPER, "LOWROUTER_DATA_DIR": str(path)},
        database_url=f"sqlite:///{path}/lowrouter.db",
    )
    runtime = open_runtime(settings_, clock=clock)
    yield runtime, clock
    runtime.close()


hours = st.integers(-2, 48).map(lambda h: timedelta(hours=h))
policies = st.builds(
    KeyPolicy,
    expires_at=st.none() | hours.map(lambda d: T0 + d),
    requests_per_minute=st.none() | st.integers(1, 100),
    tokens_per_minute=st.none() | st.integers(1, 10**6),
    max_concurrent=st.none() | st.integers(1, 5),
    monthly_limit=st.none() | st.integers(0, 10**9),
    allowed_ips=st.none()
    | st.lists(
        st.sampled_from(["203.0.113.0/24", "2001:db8::/32", "10.0.0.0/8"]),
        min_size=1,
        max_size=3,
        unique=True,
    ).map(tuple),
)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("policy"), policies),
        st.tuples(st.just("rotate"), st.integers(0, 10)),
        st.tuples(st.just("revoke"), st.none()),
        st.tuples(st.just("wait"), st.integers(1, 20)),
    ),
    max_size=6,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    first=policies,
    steps=steps,
    probes=st.lists(st.tuples(hours, st.sampled_from(ADDRESSES)), min_size=1, max_size=6),
)
def test_the_lookup_record_and_the_aggregate_always_agree(
    world: tuple[Runtime, Clock],
    first: KeyPolicy,
    steps: list[tuple[str, object]],
    probes: list[tuple[timedelta, str | None]],
) -> None:
    runtime, clock = world
    app: Lowrouter = runtime.app
    clock.now = T0
    account = app.open_account(f"agree-{uuid4().hex}", ACTOR)
    issued = app.create_key(account.account.id, "k", Scope(), ACTOR, first)
    keys: list[tuple[UUID, str]] = [
        (issued.key.id, hash_token(runtime.settings.pepper, issued.token))
    ]
    for action, value in steps:
        key_id = keys[-1][0]
        try:
            if action == "policy":
                assert isinstance(value, KeyPolicy)
                app.update_key(key_id, ACTOR, policy_changes=_fields(value))
            elif action == "rotate":
                assert isinstance(value, int)
                new = app.rotate_key(key_id, ACTOR, grace=timedelta(hours=value))
                keys.append((new.key.id, hash_token(runtime.settings.pepper, new.token)))
            elif action == "revoke":
                app.revoke_key(key_id, ACTOR)
            else:
                assert isinstance(value, int)
                clock.now += timedelta(hours=value)
        except DomainError:
            pass  # refused: nothing changed, on either side
    for key_id, token_hash in keys:
        record = find_key(runtime.engine, token_hash)
        key = app.get_key(key_id)
        assert record is not None
        assert record.policy == key.policy
        for offset, address in probes:
            moment = T0 + offset
            assert record.access_at(moment, address) == key.access_at(moment, address)
            assert record.access_at(moment) == key.access_at(moment)


def _fields(policy: KeyPolicy) -> dict[str, object]:
    return {
        name: getattr(policy, name)
        for name in KeyPolicy.__dataclass_fields__
        if not name.startswith("_")
    }


def test_investigate_finds_a_key_whose_grace_ended_as_revoked_not_rotating(
    world: tuple[Runtime, Clock],
) -> None:
    from projections.queries.forensics import matches_of_display

    runtime, clock = world
    app = runtime.app
    clock.now = datetime.now(UTC) - timedelta(hours=2)
    account = app.open_account(f"grace-{uuid4().hex}", ACTOR)
    issued = app.create_key(account.account.id, "k", Scope(), ACTOR)
    app.rotate_key(issued.key.id, ACTOR, grace=timedelta(hours=1))  # ended an hour ago
    display = issued.key.display
    matches = matches_of_display.run(runtime.engine, display[:10], display[-4:])
    assert [m.status for m in matches if m.key_id == str(issued.key.id)] == ["revoked"]
