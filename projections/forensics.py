"""Forensics for the security team: where each key was used from, and unexpected usage.

The projection reads every completion (LedgerPage.Settled) and keeps, per key:
- `lr_key_clients`: each (client address, user agent) pair seen, with first and last use, requests
  and cost ("" stands for an unknown address or agent, e.g. a hold settled by the reconciler);
- `lr_key_days`: the key's spend per UTC day (the day the request was reserved in);
- `lr_key_flags`: unexpected usage, raised once per subject:
  * `new_address` / `new_user_agent`: the key was used from a client address (or with a user
    agent) it had never used before. A key's first use never raises these (nor does the first
    known address after uses from unknown ones, such as holds the reconciler settled).
  * `spend_spike`: the key's spend on a day went over three times its trailing 7-day daily
    average. The average is over the 7 days before (or, for a younger key, the days since its
    first day of spend); a key with no spend in those days has no history and is not flagged.
- `lr_flag_acknowledgements`: the flags an owner accepted (ApiKey.FlagAcknowledged): a flag
  stays listed, marked acknowledged, and stops being an open alert.

Like every projection, the tables are a pure function of the log: rebuilt, they are the same.
The module also holds the read-side queries `lowrouter investigate` and the dashboard use.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    String,
    Table,
    func,
    select,
    update,
)

from application.audit import Figures, KeyHistory, key_history
from application.keys import Lowrouter
from domain.flags import NEW_ADDRESS, NEW_USER_AGENT, SPEND_SPIKE
from domain.keys import ApiKey
from domain.ledger import LedgerPage
from domain.money import format_credits
from projections.base import insert_rows
from projections.schema import (
    daily_spend,
    from_us,
    holds,
    keys,
    metadata,
    positions,
    to_us,
    usage,
)

ADDRESS_LENGTH = 64
AGENT_LENGTH = 300
SPIKE_FACTOR = 3
TRAILING_DAYS = 7

key_clients = Table(
    "lr_key_clients",
    metadata,
    Column("key_id", String(36), primary_key=True),
    Column("client_ip", String(ADDRESS_LENGTH), primary_key=True),  # "" = unknown
    Column("user_agent", String(AGENT_LENGTH), primary_key=True),  # "" = unknown
    Column("first_seen_us", BigInteger, nullable=False),
    Column("last_seen_us", BigInteger, nullable=False),
    Column("requests", BigInteger, nullable=False),
    Column("cost", BigInteger, nullable=False),
)

key_days = Table(
    "lr_key_days",
    metadata,
    Column("key_id", String(36), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("cost", BigInteger, nullable=False),
)

key_flags = Table(
    "lr_key_flags",
    metadata,
    Column("key_id", String(36), primary_key=True),
    Column("kind", String(32), primary_key=True),  # new_address | new_user_agent | spend_spike
    Column("subject", String(AGENT_LENGTH), primary_key=True),  # the address, agent or day
    Column("position", BigInteger, nullable=False),  # the Settled event that raised it
    Column("at_us", BigInteger, nullable=False),
    Column("client_ip", String(ADDRESS_LENGTH)),
    Column("user_agent", String(AGENT_LENGTH)),
    Column("amount", BigInteger),  # spend_spike: the day's spend when it went over
    Column("baseline", BigInteger),  # spend_spike: the trailing daily average
)

flag_acknowledgements = Table(
    "lr_flag_acknowledgements",
    metadata,
    Column("key_id", String(36), primary_key=True),
    Column("kind", String(32), primary_key=True),
    Column("subject", String(AGENT_LENGTH), primary_key=True),
    Column("at_us", BigInteger, nullable=False),
    Column("actor", String(300), nullable=False),  # who, for people: "session of lr-mk-…"
)


# The projection ---------------------------------------------------------------------------------


class ForensicsProjection:
    name = "forensics"
    schema_version = 2
    tables = (key_clients, key_days, key_flags, flag_acknowledgements)
    topics = (get_topic(LedgerPage.Settled), get_topic(ApiKey.FlagAcknowledged))

    def apply(self, conn: Connection, events: Sequence[tuple[int, Any]]) -> None:
        settled = [(p, e) for p, e in events if isinstance(e, LedgerPage.Settled)]
        if settled:
            batch = _Batch.load(conn, settled)
            for position, event in settled:
                batch.settled(position, event)
            batch.write(conn)
        acknowledged = [e for _, e in events if isinstance(e, ApiKey.FlagAcknowledged)]
        if acknowledged:
            _acknowledge(conn, acknowledged)


@dataclass
class _Client:
    first_us: int
    last_us: int
    requests: int = 0
    cost: int = 0


@dataclass
class _KeyState:
    """What one batch knows about one key: loaded once, changed in memory, written once."""

    key_id: str
    clients: dict[tuple[str, str], _Client] = field(default_factory=dict)
    days: dict[str, int] = field(default_factory=dict)  # recent days' spend
    first_day: str | None = None
    flags: set[tuple[str, str]] = field(default_factory=set)
    new_clients: set[tuple[str, str]] = field(default_factory=set)
    changed_clients: set[tuple[str, str]] = field(default_factory=set)
    new_days: set[str] = field(default_factory=set)
    changed_days: set[str] = field(default_factory=set)
    new_flags: list[dict[str, Any]] = field(default_factory=list)

    def addresses(self) -> set[str]:
        return {address for address, _ in self.clients}

    def agents(self) -> set[str]:
        return {agent for _, agent in self.clients}

    def see(self, pair: tuple[str, str], at_us: int, cost: int) -> None:
        client = self.clients.get(pair)
        if client is None:
            client = self.clients[pair] = _Client(at_us, at_us)
            self.new_clients.add(pair)
        elif pair not in self.new_clients:
            self.changed_clients.add(pair)
        client.last_us = at_us
        client.requests += 1
        client.cost += cost

    def spend(self, day: str, cost: int) -> int:
        """Add to the day's spend; returns the new total."""
        if day in self.days:
            if day not in self.new_days:
                self.changed_days.add(day)
        else:
            self.new_days.add(day)
        self.days[day] = self.days.get(day, 0) + cost
        if self.first_day is None or day < self.first_day:
            self.first_day = day
        return self.days[day]

    def trailing_average(self, day: str) -> tuple[int, int] | None:
        """(trailing spend, days it is averaged over), or None when the key has no history."""
        first = self.first_day
        if first is None or first >= day:
            return None
        current = date.fromisoformat(day)
        span = min(TRAILING_DAYS, (current - date.fromisoformat(first)).days)
        window = [(current - timedelta(days=n)).isoformat() for n in range(1, span + 1)]
        total = sum(self.days.get(d, 0) for d in window)
        return (total, span) if total > 0 else None

    def flag(self, kind: str, subject: str, position: int, at_us: int, **extra: Any) -> None:
        if (kind, subject) in self.flags:
            return
        self.flags.add((kind, subject))
        self.new_flags.append(
            {
                "key_id": self.key_id,
                "kind": kind,
                "subject": subject,
                "position": position,
                "at_us": at_us,
                "client_ip": None,
                "user_agent": None,
                "amount": None,
                "baseline": None,
                **extra,
            }
        )


class _Batch:
    def __init__(self, states: dict[str, _KeyState]) -> None:
        self.states = states

    @classmethod
    def load(cls, conn: Connection, settled: list[tuple[int, Any]]) -> "_Batch":
        """Everything the batch needs about its keys, in four queries."""
        key_ids = sorted({e.key_id for _, e in settled})
        states = {key_id: _KeyState(key_id) for key_id in key_ids}
        earliest = min(date.fromisoformat(e.reserved_day) for _, e in settled)
        since = (earliest - timedelta(days=TRAILING_DAYS)).isoformat()
        clients = conn.execute(select(key_clients).where(key_clients.c.key_id.in_(key_ids)))
        for row in clients:
            states[row.key_id].clients[(row.client_ip, row.user_agent)] = _Client(
                row.first_seen_us, row.last_seen_us, row.requests, row.cost
            )
        first_days = conn.execute(
            select(key_days.c.key_id, func.min(key_days.c.day))
            .where(key_days.c.key_id.in_(key_ids))
            .group_by(key_days.c.key_id)
        )
        for key_id, first_day in first_days:
            states[key_id].first_day = first_day
        recent = conn.execute(
            select(key_days).where(key_days.c.key_id.in_(key_ids), key_days.c.day >= since)
        )
        for row in recent:
            states[row.key_id].days[row.day] = row.cost
        flags = conn.execute(
            select(key_flags.c.key_id, key_flags.c.kind, key_flags.c.subject).where(
                key_flags.c.key_id.in_(key_ids)
            )
        )
        for key_id, kind, subject in flags:
            states[key_id].flags.add((kind, subject))
        return cls(states)

    def settled(self, position: int, e: LedgerPage.Settled) -> None:
        state = self.states[e.key_id]
        at_us = to_us(e.timestamp)
        address = (e.client_ip or "")[:ADDRESS_LENGTH]
        agent = (e.user_agent or "")[:AGENT_LENGTH]
        seen = {"client_ip": address or None, "user_agent": agent or None}
        # Only a key that was already used from somewhere known can be used from somewhere new.
        addresses, agents = state.addresses() - {""}, state.agents() - {""}
        if address and addresses and address not in addresses:
            state.flag(NEW_ADDRESS, address, position, at_us, **seen)
        if agent and agents and agent not in agents:
            state.flag(NEW_USER_AGENT, agent, position, at_us, **seen)
        state.see((address, agent), at_us, e.cost)
        day = e.reserved_day
        spent = state.spend(day, e.cost)
        trailing = state.trailing_average(day)
        if trailing is not None:
            total, span = trailing
            if spent * span > SPIKE_FACTOR * total:
                state.flag(
                    SPEND_SPIKE, day, position, at_us, amount=spent, baseline=total // span, **seen
                )

    def write(self, conn: Connection) -> None:
        states = self.states.values()
        _insert(conn, key_clients, [_client_row(s, pair) for s in states for pair in s.new_clients])
        for state in states:
            for address, agent in state.changed_clients:
                client = state.clients[(address, agent)]
                conn.execute(
                    update(key_clients)
                    .where(
                        key_clients.c.key_id == state.key_id,
                        key_clients.c.client_ip == address,
                        key_clients.c.user_agent == agent,
                    )
                    .values(last_seen_us=client.last_us, requests=client.requests, cost=client.cost)
                )
            for day in state.changed_days:
                conn.execute(
                    update(key_days)
                    .where(key_days.c.key_id == state.key_id, key_days.c.day == day)
                    .values(cost=state.days[day])
                )
        new_days = [
            {"key_id": s.key_id, "day": day, "cost": s.days[day]}
            for s in states
            for day in s.new_days
        ]
        _insert(conn, key_days, new_days)
        _insert(conn, key_flags, [row for s in states for row in s.new_flags])


def _acknowledge(conn: Connection, events: list[Any]) -> None:
    """The domain records a flag's acknowledgement once; a repeat here is skipped, not fatal."""
    key_ids = sorted({str(e.originator_id) for e in events})
    known = {
        (row.key_id, row.kind, row.subject)
        for row in conn.execute(
            select(flag_acknowledgements).where(flag_acknowledgements.c.key_id.in_(key_ids))
        )
    }
    rows = []
    for e in events:
        subject = (str(e.originator_id), e.kind, e.subject[:AGENT_LENGTH])
        if subject in known:
            continue
        known.add(subject)
        actor = e.actor or {}
        who = f"{actor.get('name', '')} ({actor.get('kind', '')})"[:300]
        rows.append(
            dict(zip(("key_id", "kind", "subject"), subject, strict=True))
            | {"at_us": to_us(e.timestamp), "actor": who}
        )
    _insert(conn, flag_acknowledgements, rows)


def _client_row(state: _KeyState, pair: tuple[str, str]) -> dict[str, Any]:
    client = state.clients[pair]
    return {
        "key_id": state.key_id,
        "client_ip": pair[0],
        "user_agent": pair[1],
        "first_seen_us": client.first_us,
        "last_seen_us": client.last_us,
        "requests": client.requests,
        "cost": client.cost,
    }


def _insert(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    insert_rows(conn, table, rows)


# Reading: unexpected-usage flags ----------------------------------------------------------------


@dataclass(frozen=True)
class UsageFlag:
    key_id: str
    kind: str  # new_address | new_user_agent | spend_spike
    subject: str  # the new address or agent, or the day of the spike
    at: datetime
    position: int
    client_ip: str | None
    user_agent: str | None
    amount: int | None  # spend_spike: the day's spend when it went over (micro-credits)
    baseline: int | None  # spend_spike: the trailing daily average (micro-credits)
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None

    @property
    def acknowledged(self) -> bool:
        return self.acknowledged_at is not None

    def describe(self) -> str:
        if self.kind == NEW_ADDRESS:
            return f"first use from address {self.subject}"
        if self.kind == NEW_USER_AGENT:
            return f"first use with user agent {self.subject!r}"
        return (
            f"spent {format_credits(self.amount or 0)} on {self.subject}, over "
            f"{SPIKE_FACTOR}x its trailing daily average of {format_credits(self.baseline or 0)}"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "subject": self.subject,
            "at": _iso(self.at),
            "client_ip": self.client_ip,
            "user_agent": self.user_agent,
            "amount": format_credits(self.amount) if self.amount is not None else None,
            "baseline": format_credits(self.baseline) if self.baseline is not None else None,
            "description": self.describe(),
            "acknowledged_at": _iso(self.acknowledged_at) if self.acknowledged_at else None,
        }


def flags_for_keys(engine: Engine, key_ids: Iterable[object]) -> dict[str, list[UsageFlag]]:
    """Unexpected-usage flags of these keys, oldest first, by key id string (every key given
    is present, with an empty list when it has none)."""
    ids = sorted({str(key_id) for key_id in key_ids})
    found: dict[str, list[UsageFlag]] = {key_id: [] for key_id in ids}
    if not ids:
        return found
    ack = flag_acknowledgements
    query = (
        select(key_flags, ack.c.at_us.label("acknowledged_us"), ack.c.actor)
        .outerjoin(
            ack,
            (ack.c.key_id == key_flags.c.key_id)
            & (ack.c.kind == key_flags.c.kind)
            & (ack.c.subject == key_flags.c.subject),
        )
        .where(key_flags.c.key_id.in_(ids))
        .order_by(key_flags.c.position, key_flags.c.kind)
    )
    with engine.connect() as conn:
        for row in conn.execute(query):
            found[row.key_id].append(
                UsageFlag(
                    key_id=row.key_id,
                    kind=row.kind,
                    subject=row.subject,
                    at=_time(row.at_us),
                    position=row.position,
                    client_ip=row.client_ip,
                    user_agent=row.user_agent,
                    amount=row.amount,
                    baseline=row.baseline,
                    acknowledged_at=from_us(row.acknowledged_us),
                    acknowledged_by=row.actor,
                )
            )
    return found


def summarize_flags(flags: Sequence[UsageFlag]) -> str:
    """`new address x2, spend spike` for a table cell; "-" when there are none."""
    counts: dict[str, int] = {}
    for flag in flags:
        counts[flag.kind] = counts.get(flag.kind, 0) + 1
    parts = [
        kind.replace("_", " ") + (f" x{count}" if count > 1 else "")
        for kind, count in counts.items()
    ]
    return ", ".join(parts) or "-"


# Reading: how a key was used --------------------------------------------------------------------


@dataclass(frozen=True)
class ClientSeen:
    client_ip: str | None
    user_agent: str | None
    first_seen: datetime
    last_seen: datetime
    requests: int
    cost: int


def clients_of_key(engine: Engine, key_id: object) -> list[ClientSeen]:
    """Every (address, user agent) the key was used from, in order of first use."""
    query = (
        select(key_clients)
        .where(key_clients.c.key_id == str(key_id))
        .order_by(key_clients.c.first_seen_us, key_clients.c.client_ip, key_clients.c.user_agent)
    )
    with engine.connect() as conn:
        return [
            ClientSeen(
                client_ip=row.client_ip or None,
                user_agent=row.user_agent or None,
                first_seen=_time(row.first_seen_us),
                last_seen=_time(row.last_seen_us),
                requests=row.requests,
                cost=row.cost,
            )
            for row in conn.execute(query)
        ]


@dataclass(frozen=True)
class ModelUse:
    model: str
    requests: int
    cost: int
    first_used: datetime
    last_used: datetime


def models_of_key(engine: Engine, key_id: object) -> list[ModelUse]:
    """The models a key was used for, most requests first (from the usage history)."""
    query = (
        select(
            usage.c.model,
            func.count().label("requests"),
            func.sum(usage.c.cost).label("cost"),
            func.min(usage.c.at_us).label("first_us"),
            func.max(usage.c.at_us).label("last_us"),
        )
        .where(usage.c.key_id == str(key_id))
        .group_by(usage.c.model)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    used = [
        ModelUse(row.model, row.requests, int(row.cost), _time(row.first_us), _time(row.last_us))
        for row in rows
    ]
    return sorted(used, key=lambda m: (-m.requests, m.model))


@dataclass(frozen=True)
class HourSpend:
    hour: datetime
    requests: int
    cost: int


def spend_per_hour(
    engine: Engine, key_id: object, since: datetime | None, until: datetime
) -> list[HourSpend]:
    """The key's completions per UTC hour in [since, until), hours without any left out."""
    query = select(usage.c.at_us, usage.c.cost).where(
        usage.c.key_id == str(key_id), usage.c.at_us < to_us(until)
    )
    if since is not None:
        query = query.where(usage.c.at_us >= to_us(since))
    hours: dict[datetime, list[int]] = {}
    with engine.connect() as conn:
        for at_us, cost in conn.execute(query):
            hour = _time(at_us).replace(minute=0, second=0, microsecond=0)
            totals = hours.setdefault(hour, [0, 0])
            totals[0] += 1
            totals[1] += cost
    return [HourSpend(hour, n, cost) for hour, (n, cost) in sorted(hours.items())]


# Reading: finding a key from what the security team was given -----------------------------------


@dataclass(frozen=True)
class KeyMatch:
    key_id: str
    account_id: str
    kind: str  # "sk" (inference) or "mk" (management)
    name: str
    display: str
    status: str
    created: datetime


def keys_by_display(engine: Engine, prefix: str, last4: str) -> list[KeyMatch]:
    """Every key whose display (`lr-sk-AbCd…wXyZ`) has this prefix and last four."""
    return _matches(engine, keys.c.prefix == prefix, keys.c.last4 == last4)


def key_by_token_hash(engine: Engine, token_hash: str) -> KeyMatch | None:
    found = _matches(engine, keys.c.token_hash == token_hash)
    return found[0] if found else None


def _matches(engine: Engine, *conditions: Any) -> list[KeyMatch]:
    query = (
        select(
            keys.c.key_id,
            keys.c.account_id,
            keys.c.kind,
            keys.c.name,
            keys.c.prefix,
            keys.c.last4,
            keys.c.status,
            keys.c.created_us,
        )
        .where(*conditions)
        .order_by(keys.c.created_us, keys.c.key_id)
    )
    with engine.connect() as conn:
        return [
            KeyMatch(
                key_id=row.key_id,
                account_id=row.account_id,
                kind=row.kind,
                name=row.name,
                display=f"{row.prefix}…{row.last4}",
                status=row.status,
                created=_time(row.created_us),
            )
            for row in conn.execute(query)
        ]


# The leak investigation ------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyInvestigation:
    """Everything known about one key's use, for `lowrouter investigate`: its history from the
    events, and its uses from the read models."""

    history: KeyHistory  # every event, the key as it is now
    since: datetime | None  # when the leak may have started (None: the key's whole life)
    until: datetime  # its revocation, or now
    clients: list[ClientSeen]
    models: list[ModelUse]
    hours: list[HourSpend]  # spend per hour between `since` and `until`
    flags: list[UsageFlag]

    @property
    def key(self) -> ApiKey:
        assert self.history.state is not None
        return self.history.state

    @property
    def first_used(self) -> datetime | None:
        return min((c.first_seen for c in self.clients), default=None)

    @property
    def last_used(self) -> datetime | None:
        return max((c.last_seen for c in self.clients), default=None)

    @property
    def window_requests(self) -> int:
        return sum(hour.requests for hour in self.hours)

    @property
    def window_cost(self) -> int:
        return sum(hour.cost for hour in self.hours)

    @property
    def attempts_after_revocation(self) -> int:
        return sum(e.count for e in self.history.attempts_after_revocation)

    def new_since(self, client: ClientSeen) -> bool:
        """Was this address and agent first seen after the leak started?"""
        return self.since is not None and client.first_seen >= self.since


def investigate_key(
    app: Lowrouter, engine: Engine, key_id: UUID, since: datetime | None, now: datetime
) -> KeyInvestigation:
    history = key_history(app, key_id)
    key = history.state
    assert key is not None
    until = _end_of_use(key, now)
    return KeyInvestigation(
        history=history,
        since=since,
        until=until,
        clients=clients_of_key(engine, key_id),
        models=models_of_key(engine, key_id),
        hours=spend_per_hour(engine, key_id, since, until),
        flags=flags_for_keys(engine, [key_id])[str(key_id)],
    )


def _end_of_use(key: ApiKey, now: datetime) -> datetime:
    """When the key stopped working (revoked, or its rotation grace ended), else now. The window
    ends just after that moment, so a request in the same microsecond is counted."""
    if key.revoked_at is not None:
        return key.revoked_at + timedelta(microseconds=1)
    if key.status_at(now) == "revoked" and key.grace_deadline is not None:
        return key.grace_deadline
    return now + timedelta(microseconds=1)


# Reading: the money the usage projection recorded, for --verify-balances ------------------------


@dataclass(frozen=True)
class RecordedMoney:
    """What the usage projection's tables say, all read at one tracking position."""

    position: int
    figures: dict[str, Figures]  # table name -> figures (see application.audit.verify_books)


class MovingTarget(RuntimeError):
    """The usage projection kept moving while its tables were read."""


def recorded_money(engine: Engine, name: str = "usage", attempts: int = 20) -> RecordedMoney:
    """Read the usage tables at one position: the position is read before and after, and the
    read is repeated if a batch was applied in between (positions only move forward)."""
    for _ in range(attempts):
        with engine.connect() as conn:
            before = _position(conn, name)
            figures = {
                "lr_daily_spend": _daily_spend(conn),
                "lr_usage": _usage_totals(conn),
                "lr_holds": _held(conn),
            }
            if _position(conn, name) == before:
                return RecordedMoney(before, figures)
    raise MovingTarget(f"the {name!r} projection kept moving while it was read; try again")


def _position(conn: Connection, name: str) -> int:
    query = select(positions.c.position).where(positions.c.name == name)
    return int(conn.execute(query).scalar_one())


def _daily_spend(conn: Connection) -> Figures:
    query = select(
        daily_spend.c.account_id,
        daily_spend.c.key_id,
        daily_spend.c.day,
        daily_spend.c.cost,
        daily_spend.c.requests,
    )
    return {(a, k, d): (int(cost), int(n)) for a, k, d, cost, n in conn.execute(query)}


def _usage_totals(conn: Connection) -> Figures:
    query = select(
        usage.c.account_id, usage.c.key_id, usage.c.day, func.sum(usage.c.cost), func.count()
    ).group_by(usage.c.account_id, usage.c.key_id, usage.c.day)
    return {(a, k, d): (int(cost), int(n)) for a, k, d, cost, n in conn.execute(query)}


def _held(conn: Connection) -> Figures:
    query = select(holds.c.account_id, func.sum(holds.c.amount), func.count()).group_by(
        holds.c.account_id
    )
    return {(a, None, None): (int(amount), int(n)) for a, amount, n in conn.execute(query)}


# Times --------------------------------------------------------------------------------------------


def _time(us: int) -> datetime:
    moment = from_us(us)
    assert moment is not None
    return moment


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
