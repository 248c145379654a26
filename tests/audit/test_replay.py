"""Replay: the state rebuilt from the events as of T equals the state the live system had at T.

A Hypothesis-generated history (keys created, scoped, renamed, rotated with and without grace,
revoked; credits funded and adjusted; requests held, settled, released; time passing across
midnights) runs on a clock the test controls. At random moments the live state is recorded: each
key as the management API shows it (`key_json`) and the account's balance, holds and today's
spend as the ledger's spend control sees them. Afterwards every moment is replayed from the events
alone (application.audit) and must give the same state, at that moment and at a moment halfway to
the next one (nothing happened in between). The books recomputed from the whole log must also
agree with the usage read models, on SQLite and PostgreSQL.
"""

import contextlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from application.audit import account_history, key_history, scan_ledger, verify_books
from domain.actor import Actor
from domain.errors import DomainError
from domain.scope import Scope
from domain.usage import Usage
from infrastructure import cli
from infrastructure.runtime import Runtime, open_runtime
from infrastructure.settings import Settings
from infrastructure.views import key_json
from projections.queries.forensics import recorded_money
from tests.support.stores import PEPPER

ACTORS = [
    Actor("operator", "cli:alice"),
    Actor("management_key", "lr-mk-AbCd…wXyZ", "192.0.2.10"),
    Actor("dashboard", "session:bob", "192.0.2.11"),
]
WAITS = [1, 59, 3600, 5 * 3600, 86400]  # seconds; a day crosses midnight

step = st.one_of(
    st.tuples(st.just("create"), st.integers(0, 5)),
    st.tuples(st.just("scope"), st.integers(0, 5)),
    st.tuples(st.just("rename"), st.integers(0, 5)),
    st.tuples(st.just("rotate"), st.integers(0, 5)),
    st.tuples(st.just("revoke"), st.integers(0, 5)),
    st.tuples(st.just("spend"), st.integers(0, 5)),
    st.tuples(st.just("hold"), st.integers(0, 5)),
    st.tuples(st.just("settle"), st.integers(0, 5)),
    st.tuples(st.just("release"), st.integers(0, 5)),
    st.tuples(st.just("fund"), st.integers(0, 5)),
    st.tuples(st.just("adjust"), st.integers(0, 5)),
    st.tuples(st.just("wait"), st.integers(0, len(WAITS) - 1)),
    st.tuples(st.just("look"), st.just(0)),
)
histories = st.lists(step, min_size=1, max_size=30)


class Clock:
    """Time as the test says; only ever moves forward (across Hypothesis examples too)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 22, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Moment:
    at: datetime
    keys: dict[UUID, dict[str, Any]]  # key id -> KEY at that moment
    balance: int
    held: int
    spent_today: dict[str, int]  # key id -> today's settled spend (non-zero only)
    day: str


@dataclass
class History:
    runtime: Runtime
    clock: Clock
    account: UUID
    keys: list[UUID] = field(default_factory=list)
    open_holds: list[str] = field(default_factory=list)
    moments: list[Moment] = field(default_factory=list)

    def actor(self, n: int) -> Actor:
        return ACTORS[n % len(ACTORS)]

    def key(self, n: int) -> UUID:
        return self.keys[n % len(self.keys)]

    def run(self, action: str, n: int) -> None:
        ledger, spend = self.runtime.app, self.runtime.spend
        if action == "create" or (not self.keys and action in KEY_ACTIONS):
            limit = None if n % 2 else 5_000 + n
            scope = Scope(daily_limit=limit)
            self.keys.append(ledger.create_key(self.account, f"k{n}", scope, self.actor(n)).key.id)
        elif action == "scope":
            models = ("a/b",) if n % 2 else None
            scope = Scope(models=models, region="eu" if n % 3 else None, daily_limit=n * 1000)
            ledger.scope_key(self.key(n), scope, self.actor(n))
        elif action == "rename":
            ledger.rename_key(self.key(n), f"renamed-{n}", self.actor(n))
        elif action == "rotate":
            grace = timedelta(seconds=[0, 30, 7200][n % 3])
            self.keys.append(ledger.rotate_key(self.key(n), self.actor(n), grace).key.id)
        elif action == "revoke":
            ledger.revoke_key(self.key(n), self.actor(n), reason=f"reason {n}")
        elif action in ("spend", "hold"):
            self.request(n, settle=action == "spend")
        elif action == "settle" and self.open_holds:
            request = self.open_holds.pop(n % len(self.open_holds))
            spend.settle(self.account, request, 100 * n, usage(n)).result()
        elif action == "release" and self.open_holds:
            request = self.open_holds.pop(n % len(self.open_holds))
            spend.release(self.account, request, "upstream failed").result()
        elif action == "fund":
            spend.fund(self.account, 1000 * (n + 1), self.actor(n)).result()
        elif action == "adjust":
            amount = 250 * (n + 1) * (1 if n % 2 else -1)
            spend.adjust(self.account, amount, f"correction {n}", self.actor(n)).result()
        elif action == "wait":
            self.clock.advance(WAITS[n])
        elif action == "look":
            self.look()

    def request(self, n: int, settle: bool) -> None:
        key_id = self.key(n)
        limit = self.runtime.app.get_key(key_id).scope.daily_limit
        request = f"req-{uuid.uuid4().hex}"
        spend = self.runtime.spend
        spend.reserve(self.account, request, key_id, "a/b", 1000 + n, limit).result()
        if settle:
            spend.settle(self.account, request, 500 + 10 * n, usage(n)).result()
        else:
            self.open_holds.append(request)

    def look(self) -> None:
        """Record what the live system shows now."""
        now = self.clock()
        ledger = self.runtime.app
        keys = {key_id: key_json(ledger.get_key(key_id), now) for key_id in self.keys}
        view = self.runtime.spend.view(self.account).result()
        # reserved without a meter, so each key is its own meter: day_spent is per key here
        spent = {key: cost for key, cost in view.day_spent.items() if cost}
        self.moments.append(Moment(now, keys, view.balance, view.held, spent, view.day))


KEY_ACTIONS = {"scope", "rename", "rotate", "revoke", "spend", "hold"}


def usage(n: int) -> Usage:
    return Usage(
        key_name=f"k{n}",
        model="a/b",
        provider="p",
        region=None,
        prompt_tokens=n,
        completion_tokens=n,
        status="ok",
        status_code=200,
        latency_ms=n,
        streamed=False,
        client_ip=f"198.51.100.{n}",
        user_agent="replay-test",
    )


def run(runtime: Runtime, clock: Clock, steps: list[tuple[str, int]]) -> History:
    opened = runtime.app.open_account(f"acct-{uuid.uuid4().hex[:8]}", ACTORS[0], credits=100_000)
    history = History(runtime, clock, opened.account.id)
    for action, n in steps:
        with contextlib.suppress(DomainError):  # refusals (limits, revoked keys) store nothing
            history.run(action, n)
        clock.advance(1)  # every step's events are strictly after the moment recorded before it
    history.look()
    return history


def check_replay(history: History) -> None:
    """Every recorded moment, replayed from the events, at that moment and half a second later
    (before the next step's events), gives what the live system showed."""
    ledger = history.runtime.app
    for moment in history.moments:
        for at in (moment.at, moment.at + timedelta(milliseconds=500)):
            for key_id in history.keys:
                replayed = key_history(ledger, key_id, as_of=at).state
                expected = moment.keys.get(key_id)
                if expected is None:  # created after this moment
                    assert replayed is None
                else:
                    assert replayed is not None
                    assert key_json(replayed, moment.at) == expected
            books = account_history(ledger, history.account, as_of=at).books
            assert books.problems == []
            assert (books.balance, books.held) == (moment.balance, moment.held)
            spent = {k: s.cost for (k, day), s in books.spend.items() if day == moment.day}
            assert {k: c for k, c in spent.items() if c} == moment.spent_today


def check_books_agree_with_read_models(runtime: Runtime) -> None:
    runtime.projections.catch_up()
    recorded = recorded_money.run(runtime.engine)
    scan = scan_ledger(runtime.app, recorded.position)
    assert verify_books(runtime.app, scan, recorded.figures) == []
    assert all(books.problems == [] for books in scan.books.values())


@pytest.fixture
def clocked(settings: Settings) -> Any:
    clock = Clock()
    runtime = open_runtime(settings, clock=clock)
    yield runtime, clock
    runtime.close()


def test_replay_at_any_moment_equals_the_live_state_then(clocked: Any, database_url: str) -> None:
    runtime, clock = clocked
    examples = 25 if database_url.startswith("sqlite") else 10

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(steps=histories)
    def replay_equals_live(steps: list[tuple[str, int]]) -> None:
        history = run(runtime, clock, steps)
        check_replay(history)

    replay_equals_live()
    check_books_agree_with_read_models(runtime)


def test_the_cli_audit_replays_the_same_state(
    clocked: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    runtime, clock = clocked
    steps = [
        ("create", 0),
        ("spend", 1),
        ("look", 0),
        ("rename", 0),
        ("wait", 4),
        ("scope", 1),
        ("rotate", 0),
        ("look", 0),
        ("hold", 2),
        ("wait", 2),
        ("revoke", 1),
        ("adjust", 3),
    ]
    history = run(runtime, clock, steps)
    check_replay(history)
    monkeypatch.setenv("LOWROUTER_TOKEN_PEPPER", PEPPER)
    monkeypatch.setenv("LOWROUTER_DATA_DIR", str(settings.data_dir))
    url = settings.database_url
    for moment in history.moments:
        as_of = moment.at.isoformat()
        for key_id, expected in moment.keys.items():
            audited = audit_json(
                capsys, "--database-url", url, "audit", str(key_id), "--as-of", as_of
            )
            assert audited["state"] == {**expected, "spent_today": None, "last_used_at": None}
            assert [e["version"] for e in audited["data"]] == list(
                range(1, len(audited["data"]) + 1)
            )
            assert all("token_hash" not in e for e in audited["data"])
        account = audit_json(
            capsys, "--database-url", url, "audit", str(history.account), "--as-of", as_of
        )
        assert account["books"]["balance"] == format_micro(moment.balance)
        assert account["books"]["held"] == format_micro(moment.held)


def audit_json(capsys: Any, *args: str) -> Any:
    assert cli.main([*args, "--format", "json"]) == 0, capsys.readouterr().err
    return orjson.loads(capsys.readouterr().out)


def format_micro(micro: int) -> str:
    from domain.money import format_credits

    return format_credits(micro)
