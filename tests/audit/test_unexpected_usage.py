"""Unexpected usage (projections.forensics), on SQLite and PostgreSQL.

A key is flagged when it is used from a client address or with a user agent it never used before
(never on its first use), and when its spend on a day goes over three times its trailing 7-day
daily average (only when it has spend in those days). Flags show in `flags_for_keys` (what the
dashboard reads), in `lowrouter keys list` and in `lowrouter investigate`. For random histories the
flags equal those of a plain model of the rules, whatever batches the runner applied them in, and
the tables rebuilt from scratch equal the tables built incrementally.
"""

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from application.clock import utc_day
from domain.actor import Actor
from domain.scope import Scope
from domain.usage import Usage
from infrastructure import cli
from infrastructure.runtime import Runtime, open_runtime
from infrastructure.settings import Settings
from projections.forensics import ForensicsProjection
from projections.queries.forensics import clients_of_key, flags_for_keys, summarize_flags
from tests.support.stores import PEPPER

OPERATOR = Actor("operator", "cli:test")
CREDIT = 1_000_000  # micro-credits


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def days(self, n: int) -> None:
        self.now += timedelta(days=n)


@pytest.fixture
def clocked(settings: Settings) -> Any:
    clock = Clock()
    runtime = open_runtime(settings, clock=clock)
    yield runtime, clock
    runtime.close()


def open_account(runtime: Runtime) -> UUID:
    name = f"acct-{uuid.uuid4().hex[:8]}"
    return runtime.app.open_account(name, OPERATOR, credits=10**12).account.id


def new_key(runtime: Runtime, account: UUID, name: str = "prod") -> UUID:
    return runtime.app.create_key(account, name, Scope(), OPERATOR).key.id


def use(
    runtime: Runtime,
    account: UUID,
    key: UUID,
    cost: int,
    address: str | None = "198.51.100.1",
    agent: str | None = "app/1",
) -> None:
    request = f"req-{uuid.uuid4().hex}"
    runtime.spend.reserve(account, request, key, "a/b", cost, None).result()
    runtime.spend.settle(
        account,
        request,
        cost,
        Usage(
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
            user_agent=agent,
        ),
    ).result()


def flags_of(runtime: Runtime, key: UUID) -> list[tuple[str, str]]:
    runtime.projections.catch_up(["forensics"])
    return [(f.kind, f.subject) for f in flags_for_keys.run(runtime.engine, [key])[str(key)]]


# The rules, one by one --------------------------------------------------------------------------


def test_a_new_address_or_user_agent_is_flagged_but_never_the_first_use(clocked: Any) -> None:
    runtime, _ = clocked
    account = open_account(runtime)
    key = new_key(runtime, account)
    use(runtime, account, key, 10, None, None)  # settled by the reconciler: nothing known
    use(runtime, account, key, 10, "198.51.100.1", "app/1")  # the first known address and agent
    use(runtime, account, key, 10, "198.51.100.1", "app/1")
    assert flags_of(runtime, key) == []

    use(runtime, account, key, 10, "203.0.113.7", "app/1")
    use(runtime, account, key, 10, "198.51.100.1", "curl/8")
    use(runtime, account, key, 10, "203.0.113.7", "curl/8")  # both known by now
    use(runtime, account, key, 10, "2001:db8::1", "python-requests/2")
    assert flags_of(runtime, key) == [
        ("new_address", "203.0.113.7"),
        ("new_user_agent", "curl/8"),
        ("new_address", "2001:db8::1"),
        ("new_user_agent", "python-requests/2"),
    ]
    [first, *_] = flags_for_keys.run(runtime.engine, [key])[str(key)]
    assert (first.client_ip, first.user_agent) == ("203.0.113.7", "app/1")
    assert first.describe() == "first use from address 203.0.113.7"

    seen = {(c.client_ip, c.user_agent): c.requests for c in clients_of_key(runtime.engine, key)}
    assert seen == {
        (None, None): 1,
        ("198.51.100.1", "app/1"): 2,
        ("203.0.113.7", "app/1"): 1,
        ("198.51.100.1", "curl/8"): 1,
        ("203.0.113.7", "curl/8"): 1,
        ("2001:db8::1", "python-requests/2"): 1,
    }
    other = new_key(runtime, account, "other")  # a key's first use is its own
    use(runtime, account, other, 10, "203.0.113.99", "other/1")
    assert flags_of(runtime, other) == []


def test_a_day_over_three_times_the_trailing_average_is_flagged_once(clocked: Any) -> None:
    runtime, clock = clocked
    account = open_account(runtime)
    key = new_key(runtime, account)
    for _ in range(7):
        use(runtime, account, key, CREDIT)
        clock.days(1)
    use(runtime, account, key, 3 * CREDIT - 1)
    use(runtime, account, key, 1)  # exactly three times: not over
    assert flags_of(runtime, key) == []
    use(runtime, account, key, 1)
    use(runtime, account, key, CREDIT)  # still the same spike
    day = utc_day(clock()).isoformat()
    assert flags_of(runtime, key) == [("spend_spike", day)]
    [spike] = flags_for_keys.run(runtime.engine, [key])[str(key)]
    assert (spike.amount, spike.baseline) == (3 * CREDIT + 1, CREDIT)
    assert spike.describe().startswith(f"spent 3.000001 on {day}, over 3x")


def test_spikes_need_history_and_a_young_key_averages_over_its_days(clocked: Any) -> None:
    runtime, clock = clocked
    account = open_account(runtime)
    fresh = new_key(runtime, account, "fresh")
    use(runtime, account, fresh, 100 * CREDIT)  # no history: its first day
    assert flags_of(runtime, fresh) == []

    young = new_key(runtime, account, "young")
    use(runtime, account, young, 2 * CREDIT)
    clock.days(2)  # two days of history: an average of 1 credit a day
    use(runtime, account, young, 3 * CREDIT)
    assert flags_of(runtime, young) == []
    use(runtime, account, young, 1)
    assert flags_of(runtime, young) == [("spend_spike", utc_day(clock()).isoformat())]

    small = new_key(runtime, account, "small")  # 0.01 credits a day, then 0.5: not an alert
    for _ in range(7):
        use(runtime, account, small, CREDIT // 100)
        clock.days(1)
    use(runtime, account, small, CREDIT // 2)
    assert flags_of(runtime, small) == []
    use(runtime, account, small, CREDIT // 2)  # one credit: now it is
    assert flags_of(runtime, small) == [("spend_spike", utc_day(clock()).isoformat())]

    dormant = new_key(runtime, account, "dormant")
    use(runtime, account, dormant, CREDIT)
    clock.days(8)  # nothing in the trailing 7 days: no history to compare with
    use(runtime, account, dormant, 50 * CREDIT)
    assert flags_of(runtime, dormant) == []


def test_flags_show_in_keys_list(
    clocked: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    runtime, _ = clocked
    account = open_account(runtime)
    key = new_key(runtime, account, "leaky")
    quiet = new_key(runtime, account, "quiet")
    use(runtime, account, key, 10, "198.51.100.1", "app/1")
    use(runtime, account, key, 10, "203.0.113.7", "curl/8")
    use(runtime, account, key, 10, "203.0.113.8", "curl/8")
    monkeypatch.setenv("LOWROUTER_TOKEN_PEPPER", PEPPER)
    monkeypatch.setenv("LOWROUTER_DATA_DIR", str(settings.data_dir))
    url = settings.database_url

    assert cli.main(["--database-url", url, "keys", "list", "--account", str(account)]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split()[-1] == "FLAGS"
    by_name = {row.split()[1]: row for row in rows}
    assert by_name["leaky"].endswith("new address x2, new user agent")
    assert by_name["quiet"].endswith("  -")

    listing = ["--database-url", url, "keys", "list", "--account", str(account), "--format", "json"]
    assert cli.main(listing) == 0
    listed = orjson.loads(capsys.readouterr().out)
    assert {k["name"] for k in listed["data"]} == {"leaky", "quiet"}
    assert listed["flags"][str(quiet)] == []
    assert [f["kind"] for f in listed["flags"][str(key)]] == [
        "new_address",
        "new_user_agent",
        "new_address",
    ]
    assert listed["flags"][str(key)][0]["description"] == "first use from address 203.0.113.7"
    found = flags_for_keys.run(runtime.engine, [key, quiet, uuid.uuid4()])
    assert summarize_flags(found[str(key)]) == "new address x2, new user agent"
    assert len(found) == 3 and flags_for_keys.run(runtime.engine, []) == {}


# Random histories: the flags equal a model of the rules, and rebuild equals incremental -------

ADDRESSES = [None, "198.51.100.1", "203.0.113.7", "2001:db8::5"]
AGENTS = [None, "app/1", "curl/8"]
COSTS = [0, 1, CREDIT // 2, CREDIT, 4 * CREDIT]

uses = st.lists(
    st.tuples(
        st.integers(0, 2),  # which key
        st.sampled_from(ADDRESSES),
        st.sampled_from(AGENTS),
        st.sampled_from(COSTS),
        st.sampled_from([0, 0, 0, 1, 1, 2, 9]),  # days to wait first
        st.booleans(),  # let the projection catch up after this use
    ),
    min_size=1,
    max_size=40,
)


@dataclass
class Model:
    """The rules, written out plainly."""

    addresses: dict[UUID, set[str]] = field(default_factory=dict)
    agents: dict[UUID, set[str]] = field(default_factory=dict)
    spend: dict[tuple[UUID, date], int] = field(default_factory=dict)
    first_day: dict[UUID, date] = field(default_factory=dict)
    flags: set[tuple[str, str, str]] = field(default_factory=set)

    def use(self, key: UUID, address: str | None, agent: str | None, cost: int, day: date) -> None:
        known_addresses = self.addresses.setdefault(key, set())
        known_agents = self.agents.setdefault(key, set())
        if address and known_addresses and address not in known_addresses:
            self.flags.add((str(key), "new_address", address))
        if agent and known_agents and agent not in known_agents:
            self.flags.add((str(key), "new_user_agent", agent))
        known_addresses.update([address] if address else [])
        known_agents.update([agent] if agent else [])
        self.spend[(key, day)] = self.spend.get((key, day), 0) + cost
        first = self.first_day.setdefault(key, day)
        span = min(7, (day - first).days)
        trailing = sum(
            self.spend.get((key, day - timedelta(days=n)), 0) for n in range(1, span + 1)
        )
        spent = self.spend[(key, day)]
        if span and trailing and spent >= CREDIT and spent * span > 3 * trailing:
            self.flags.add((str(key), "spend_spike", day.isoformat()))


def forensic_tables(runtime: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    with runtime.engine.connect() as conn:
        return {
            table.name: sorted(tuple(row) for row in conn.execute(select(table)))
            for table in ForensicsProjection.tables
        }


def test_flags_follow_the_rules_and_rebuild_equals_incremental(
    clocked: Any, database_url: str
) -> None:
    runtime, clock = clocked

    @settings(
        max_examples=30 if database_url.startswith("sqlite") else 10,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(history=uses)
    def flags_follow_the_rules(history: list[tuple[int, Any, Any, int, int, bool]]) -> None:
        account = open_account(runtime)
        keys = [new_key(runtime, account, f"k{n}") for n in range(3)]
        model = Model()
        for which, address, agent, cost, wait, catch_up in history:
            clock.days(wait)
            use(runtime, account, keys[which], cost, address, agent)
            model.use(keys[which], address, agent, cost, utc_day(clock()))
            if catch_up:
                runtime.projections.catch_up(["forensics"])
        runtime.projections.catch_up(["forensics"])
        found = flags_for_keys.run(runtime.engine, keys)
        assert {(k, f.kind, f.subject) for k, fs in found.items() for f in fs} == model.flags
        clock.days(30)  # the next example starts with no trailing days in common

    flags_follow_the_rules()
    incremental = forensic_tables(runtime)
    runtime.projections.reset("forensics")
    runtime.projections.catch_up(["forensics"])
    assert forensic_tables(runtime) == incremental
