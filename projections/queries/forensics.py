"""The security team's and the audit's reads: unexpected-usage flags, how a key was used, finding
a key from what the security team was given (through the key table's reader, projections.lookup),
and the money the usage projection recorded (for verify-balances). The forensics tables are
written by the projection in projections.forensics."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from sqlalchemy import Connection, Engine, func, select

from application import investigation
from application.app import Lowrouter
from application.investigation import (
    ClientSeen,
    HourSpend,
    KeyInvestigation,
    ModelUse,
    UsageFlag,
)
from application.verification import Figures
from domain.tokens import TokenKind
from projections.forensics_tables import flag_acknowledgements, key_clients, key_flags
from projections.lookup import KeyRecord, find_key, keys_by_display
from projections.queries.freshness import query
from projections.schema import daily_spend, from_us, holds, positions, to_us, usage


class ForensicsReads:
    """The investigation's port (application.investigation.KeyUseReads) on the database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def clients_of_key(self, key_id: UUID) -> list[ClientSeen]:
        return clients_of_key(self.engine, key_id)

    def models_of_key(self, key_id: UUID) -> list[ModelUse]:
        return models_of_key(self.engine, key_id)

    def spend_per_hour(
        self, key_id: UUID, since: datetime | None, until: datetime
    ) -> list[HourSpend]:
        return spend_per_hour(self.engine, key_id, since, until)

    def flags_of_key(self, key_id: UUID) -> list[UsageFlag]:
        return flags_for_keys.run(self.engine, [key_id])[str(key_id)]


@query("usage", "forensics")
def investigate_key(
    engine: Engine, app: Lowrouter, key_id: UUID, since: datetime | None, now: datetime
) -> KeyInvestigation:
    """The investigation (application.investigation.investigate_key) on the database's read
    models: how `lowrouter investigate` calls it."""
    return investigation.investigate_key(app, ForensicsReads(engine), key_id, since, now)


# Unexpected-usage flags -------------------------------------------------------------------------


@query("forensics")
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


def models_of_key(engine: Engine, key_id: object) -> list[ModelUse]:
    """The models a key was used for, most requests first (from the usage history), with the
    APIs each was called through."""
    query = (
        select(
            usage.c.model,
            usage.c.api,
            func.count().label("requests"),
            func.sum(usage.c.cost).label("cost"),
            func.min(usage.c.at_us).label("first_us"),
            func.max(usage.c.at_us).label("last_us"),
        )
        .where(usage.c.key_id == str(key_id))
        .group_by(usage.c.model, usage.c.api)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    by_model: dict[str, ModelUse] = {}
    for row in rows:
        first, last = _time(row.first_us), _time(row.last_us)
        seen = by_model.get(row.model)
        if seen is not None:
            first, last = min(seen.first_used, first), max(seen.last_used, last)
        by_model[row.model] = ModelUse(
            row.model,
            row.requests + (seen.requests if seen else 0),
            int(row.cost) + (seen.cost if seen else 0),
            first,
            last,
            tuple(sorted({*(seen.apis if seen else ()), row.api})),
        )
    used = list(by_model.values())
    return sorted(used, key=lambda m: (-m.requests, m.model))


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
    kind: TokenKind  # stored as its two-letter code
    name: str
    display: str
    status: str  # now, by the access policy (the stored column says "rotating" past the grace)
    created: datetime

    @classmethod
    def of(cls, record: KeyRecord, now: datetime) -> "KeyMatch":
        assert record.created_at is not None  # every key the lookup holds has its creation
        return cls(
            key_id=str(record.key_id),
            account_id=str(record.account_id),
            kind=record.kind,
            name=record.name,
            display=record.display,
            status=record.status_at(now),
            created=record.created_at,
        )


@query("keys")
def matches_of_display(engine: Engine, prefix: str, last4: str) -> list[KeyMatch]:
    """Every key whose display (`lr-sk-AbCd…wXyZ`) has this prefix and last four."""
    now = datetime.now(UTC)
    return [KeyMatch.of(record, now) for record in keys_by_display(engine, prefix, last4)]


@query("keys")
def match_of_token_hash(engine: Engine, token_hash: str) -> KeyMatch | None:
    record = find_key(engine, token_hash)
    return None if record is None else KeyMatch.of(record, datetime.now(UTC))


# Reading: the money the usage projection recorded, for --verify-balances ------------------------


@dataclass(frozen=True)
class RecordedMoney:
    """What the usage projection's tables say, all read at one tracking position."""

    position: int
    figures: dict[str, Figures]  # table name -> figures (see application.audit.verify_books)


class MovingTarget(RuntimeError):
    """The usage projection kept moving while its tables were read."""


@query("usage")
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


def _time(us: int) -> datetime:
    return from_us(us)
