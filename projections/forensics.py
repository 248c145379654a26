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
    average and reached at least 1 credit (domain.flags.is_spend_spike). The average is over the
    7 days before (or, for a younger key, the days since its first day of spend); a key with no
    spend in those days has no history and is not flagged.
  * `over_hold`: an upstream reported usage costing more than the request's hold; the rest was
    served and not charged (subject: the request id; amount: what was not charged).
- `lr_flag_acknowledgements`: the flags an owner accepted (ApiKey.FlagAcknowledged): a flag
  stays listed, marked acknowledged, and stops being an open alert.

Like every projection, the tables are a pure function of the log: rebuilt, they are the same.
Their queries are in projections.queries.forensics; the investigation that reads them is
application.investigation.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from eventsourcing.utils import get_topic
from sqlalchemy import (
    Connection,
    Table,
    func,
    select,
    update,
)

from domain.flags import (
    NEW_ADDRESS,
    NEW_USER_AGENT,
    OVER_HOLD,
    SPEND_SPIKE,
    TRAILING_DAYS,
    is_spend_spike,
)
from domain.keys import ApiKey
from domain.ledger import LedgerPage
from projections.base import insert_rows
from projections.forensics_tables import (
    ADDRESS_LENGTH,
    AGENT_LENGTH,
    flag_acknowledgements,
    key_clients,
    key_days,
    key_flags,
)
from projections.schema import to_us

# The projection ---------------------------------------------------------------------------------


class ForensicsProjection:
    name = "forensics"
    schema_version = 4  # 3: over_hold flags; 4: spend spikes need at least SPIKE_MINIMUM
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
        if "over_hold" in e.flags:  # served beyond the hold: an alert (usage.unexpected)
            amount = getattr(e, "unbilled", 0)
            state.flag(OVER_HOLD, e.request_id[:64], position, at_us, amount=amount, **seen)
        state.see((address, agent), at_us, e.cost)
        day = e.reserved_day
        spent = state.spend(day, e.cost)
        trailing = state.trailing_average(day)
        if trailing is not None:
            total, span = trailing
            if is_spend_spike(spent, total, span):
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
