"""The webhook outbox: which message each endpoint is owed, derived from the event log.

For every event an endpoint subscribed to, one row in `lr_webhook_messages`: the message id (the
`webhook-id` of every attempt), the endpoint, the type and the exact body to sign. Message ids
and bodies are functions of the log alone (the event's identity, its timestamp), so a rebuilt
outbox has the same rows; what was delivered is kept by the deliverer in tables of its own
(`lr_webhook_delivery_state`, `lr_webhook_attempts`) that a rebuild never drops, so a rebuild
sends nothing twice. An endpoint is owed what happened after it was added and before it was
removed.

What raises a message (the rules are in domain/webhooks.py):
- key lifecycle: ApiKey Created, Scoped/Renamed (`key.updated`), Rotated, Revoked, LeakReported;
- `budget.threshold`: from the ledger's Reserved, Settled, Released and Refused events: a key's
  committed amount for a UTC day or month (settled spend plus open holds of its rotation lineage,
  the ledger's meter: what its limits are checked against) reached 50/80/100 % of its limit at
  the time, or the ledger refused a request for the limit (100 %); once per lineage, period and
  threshold. The ledger orders every event of an
  account (one page per day, versioned saves), so reading them in log order is exact however
  many processes reserve and settle at once;
- `credits.low`: the account's balance after a charge or correction fell under 10 % of its last
  funding; once per funding;
- `usage.unexpected`: each flag the forensics projection raised (projections/forensics.py),
  picked up once forensics has applied the event that raised it.
"""

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import orjson
from eventsourcing.utils import get_topic
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    func,
    inspect,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.sql.dml import Insert

from application.investigation import UsageFlag
from application.metering import REFUSALS
from domain.errors import DailyLimitExceeded, MonthlyLimitExceeded
from domain.keys import ApiKey
from domain.leaks import LeakReported
from domain.ledger import LedgerPage
from domain.money import format_credits
from domain.webhooks import (
    EXPIRING_NOTICE_DAYS,
    LOW_CREDITS_PERCENT,
    WebhookEndpoint,
    credits_low,
    thresholds_reached,
)
from projections.base import insert_rows
from projections.forensics_tables import key_flags
from projections.schema import from_us, metadata, positions, to_us

_MESSAGE_NAMESPACE = uuid5(NAMESPACE_URL, "https://lowrouter.dev/webhook-message")

endpoints = Table(
    "lr_webhook_endpoints",
    metadata,
    Column("endpoint_id", String(36), primary_key=True),
    Column("account_id", String(36), nullable=False, index=True),
    Column("url", Text, nullable=False),
    Column("events", Text, nullable=False),  # JSON list of event types
    Column("created_us", BigInteger, nullable=False),
    Column("added_position", BigInteger, nullable=False),
    Column("removed_us", BigInteger),
    Column("removed_position", BigInteger),
)

messages = Table(
    "lr_webhook_messages",
    metadata,
    Column("message_id", String(40), primary_key=True),  # "msg_" + 32 hex: the webhook-id
    Column("endpoint_id", String(36), nullable=False),
    Column("account_id", String(36), nullable=False),
    Column("type", String(32), nullable=False),
    Column("body", Text, nullable=False),  # the exact JSON that is signed and sent
    Column("position", BigInteger, nullable=False),  # the event that raised it
    Column("at_us", BigInteger, nullable=False),
    Column("not_before_us", BigInteger, nullable=False),  # key.expiring: 7 days before expiry
    Column("withdrawn", Boolean, nullable=False),  # no longer owed (the expiry changed): not sent
    # The outbox's position when the row was written: grows with every batch, so the deliverer
    # finds new messages from where it last looked (a flag's message can have a lower position).
    Column("seq", BigInteger, nullable=False),
)
Index("lr_webhook_messages_seq", messages.c.seq)
Index("lr_webhook_messages_endpoint", messages.c.endpoint_id, messages.c.position)
Index("lr_webhook_messages_position", messages.c.position)

# What the outbox needs to know to word messages and judge budgets (pure functions of the log).
webhook_keys = Table(
    "lr_webhook_keys",
    metadata,
    Column("key_id", String(36), primary_key=True),
    Column("account_id", String(36), nullable=False),
    Column("name", Text, nullable=False),
    Column("display", String(32), nullable=False),
    Column("daily_limit", BigInteger),
    Column("monthly_limit", BigInteger),
    Column("meter", String(64)),  # what the ledger keeps its monthly figures under (its lineage)
    Column("expiring_subject", String(120)),  # the key.expiring message owed, while it is pending
)

key_spend = (
    Table(  # what the ledger checks limits against: per meter and UTC day, per meter and month
        "lr_webhook_spend",
        metadata,
        Column("key_id", String(64), primary_key=True),  # the key's meter (its lineage)
        Column("period", String(10), primary_key=True),  # "2026-12-01" daily, "2026-12" monthly
        Column("spent", BigInteger, nullable=False),  # settled, charged to the period
        Column("held", BigInteger, nullable=False),  # open holds of keys with this period's limit
        Column("reached", Text, nullable=False),  # JSON list of thresholds already reached
    )
)

open_holds = Table(  # open holds of keys that have a limit
    "lr_webhook_holds",
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("key_id", String(36), nullable=False),
    Column("meter", String(64), nullable=False),
    Column("period", String(10), nullable=False),  # the day it was reserved in
    Column("amount", BigInteger, nullable=False),
    Column("daily", Boolean, nullable=False),  # counted in the day's figure
    Column("monthly", Boolean, nullable=False),  # counted in the month's figure
)

account_credits = Table(
    "lr_webhook_accounts",
    metadata,
    Column("account_id", String(36), primary_key=True),
    Column("balance", BigInteger, nullable=False),
    Column("last_funding", BigInteger, nullable=False),
    Column("funding_ref", String(80), nullable=False),  # which funding credits.low refers to
    Column("low_sent", Boolean, nullable=False),
)

page_accounts = Table(
    "lr_webhook_pages",
    metadata,
    Column("page_id", String(36), primary_key=True),
    Column("account_id", String(36), nullable=False),
    Column("day", String(10), nullable=False),
)

outbox_cursor = Table(  # how far the forensics flags were read
    "lr_webhook_cursor",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("position", BigInteger, nullable=False),
)

# The deliverer's own tables: NOT part of the projection, so a rebuild keeps them and nothing
# delivered is sent again. Created by create_delivery_tables().
delivery_state = Table(
    "lr_webhook_delivery_state",
    metadata,
    Column("message_id", String(40), primary_key=True),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_us", BigInteger, nullable=False),
    Column("lease_until_us", BigInteger),  # a deliverer is sending it until then
    Column("delivered_us", BigInteger),
    Column("gave_up", Boolean, nullable=False),
    Column("pending", Boolean, nullable=False),  # not delivered, given up or dropped yet
)
Index("lr_webhook_delivery_pending", delivery_state.c.pending, delivery_state.c.next_attempt_us)

imported = Table(  # how far the deliverers have taken new messages into delivery_state
    "lr_webhook_imported",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("seq", BigInteger, nullable=False),
)

attempts = Table(
    "lr_webhook_attempts",
    metadata,
    Column("message_id", String(40), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("endpoint_id", String(36), nullable=False, index=True),
    Column("at_us", BigInteger, nullable=False),
    Column("status_code", Integer),  # None: no answer (refused, timed out, ...)
    Column("error", Text),
    Column("delivered", Boolean, nullable=False),
    Column("next_attempt_us", BigInteger),  # None: delivered, or given up
)

DELIVERY_TABLES = (delivery_state, attempts, imported)


def create_delivery_tables(engine: Engine) -> None:
    metadata.create_all(engine, tables=list(DELIVERY_TABLES))
    _add_pending_column(engine)


def _add_pending_column(engine: Engine) -> None:
    """Delivery state written before `pending` existed (an early 0.3 development build) gains
    it, filled from what the rows say, and its index."""
    columns = {c["name"] for c in inspect(engine).get_columns(delivery_state.name)}
    if "pending" in columns:
        return
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"ALTER TABLE {delivery_state.name} ADD COLUMN pending BOOLEAN NOT NULL DEFAULT false"
        )
        conn.execute(
            update(delivery_state)
            .where(delivery_state.c.delivered_us.is_(None), delivery_state.c.gave_up.is_(False))
            .values(pending=True)
        )
    for index in delivery_state.indexes:
        index.create(engine, checkfirst=True)


def message_id(endpoint_id: str, subject: str) -> str:
    return "msg_" + uuid5(_MESSAGE_NAMESPACE, f"{endpoint_id}/{subject}").hex


# The projection ---------------------------------------------------------------------------------

KEY_EVENTS: dict[type[Any], str] = {
    ApiKey.Created: "key.created",
    ApiKey.Scoped: "key.updated",
    ApiKey.PolicyChanged: "key.updated",
    ApiKey.Renamed: "key.updated",
    ApiKey.Rotated: "key.rotated",
    ApiKey.Revoked: "key.revoked",
    LeakReported: "key.leaked",
}
ENDPOINT_EVENTS: tuple[type[Any], ...] = (WebhookEndpoint.Added, WebhookEndpoint.Removed)
LEDGER_EVENTS: tuple[type[Any], ...] = (
    LedgerPage.Opened,
    LedgerPage.Funded,
    LedgerPage.Reserved,
    LedgerPage.Settled,
    LedgerPage.Released,
    LedgerPage.Refused,
    LedgerPage.Adjusted,
)
# The reasons the ledger records a refusal for a key's limit under, and which limit each is.
LIMIT_REFUSALS = {REFUSALS[DailyLimitExceeded]: "daily", REFUSALS[MonthlyLimitExceeded]: "monthly"}


class WebhooksProjection:
    name = "webhooks"
    schema_version = 4  # 4: a daily limit's spend is its lineage's (the meter), as the month's
    tables = (
        endpoints,
        messages,
        webhook_keys,
        key_spend,
        open_holds,
        account_credits,
        page_accounts,
        outbox_cursor,
    )
    topics = tuple(get_topic(cls) for cls in (*KEY_EVENTS, *LEDGER_EVENTS, *ENDPOINT_EVENTS))

    def apply(self, conn: Connection, events: Sequence[tuple[int, Any]]) -> None:
        batch = _Batch(conn)
        batch.load_holds(events)
        for position, event in events:
            batch.apply(position, event)
        bound = _own_position(conn, self.name) or max((p for p, _ in events), default=0)
        batch.read_flags(bound)
        batch.write(seq=bound)


@dataclass
class _Endpoint:
    endpoint_id: str
    account_id: str
    events: list[str]
    added_position: int
    removed_position: int | None

    def owed(self, type_: str, position: int) -> bool:
        return (
            type_ in self.events
            and self.added_position < position
            and (self.removed_position is None or position < self.removed_position)
        )


@dataclass(frozen=True)
class _Period:
    kind: str  # "daily" | "monthly"
    subject: str  # the key's meter (its rotation lineage), as the ledger checks the limit
    period: str  # the day or the month
    limit: int | None


class _Batch:
    """One batch's working state: rows read once, changed in memory, written at the end."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.endpoints: dict[str, list[_Endpoint]] = {}  # account -> its endpoints
        self.keys: dict[str, dict[str, Any] | None] = {}
        self.spend: dict[tuple[str, str], dict[str, Any]] = {}
        self.accounts: dict[str, dict[str, Any] | None] = {}
        self.pages: dict[str, tuple[str, str] | None] = {}  # page -> (account, day)
        self.holds: dict[str, dict[str, Any]] = {}  # open holds of limited keys, by request
        self.closed_holds: set[str] = set()
        self.withdrawn: list[tuple[str, str]] = []  # (account, subject) no longer owed
        self.dirty: dict[Table, dict[Any, dict[str, Any]]] = {}
        self.messages: list[dict[str, Any]] = []

    # Reading (each row once per batch) -----------------------------------------------------

    def endpoints_of(self, account_id: str) -> list[_Endpoint]:
        if account_id not in self.endpoints:
            rows = self.conn.execute(
                select(endpoints).where(endpoints.c.account_id == account_id)
            ).all()
            self.endpoints[account_id] = [
                _Endpoint(
                    r.endpoint_id,
                    r.account_id,
                    orjson.loads(r.events),
                    r.added_position,
                    r.removed_position,
                )
                for r in rows
            ]
        return self.endpoints[account_id]

    def key(self, key_id: str) -> dict[str, Any] | None:
        if key_id not in self.keys:
            row = self.conn.execute(
                select(webhook_keys).where(webhook_keys.c.key_id == key_id)
            ).first()
            self.keys[key_id] = dict(row._mapping) if row else None
        return self.keys[key_id]

    def account(self, account_id: str) -> dict[str, Any] | None:
        if account_id not in self.accounts:
            row = self.conn.execute(
                select(account_credits).where(account_credits.c.account_id == account_id)
            ).first()
            self.accounts[account_id] = dict(row._mapping) if row else None
        return self.accounts[account_id]

    def page(self, page_id: str) -> tuple[str, str] | None:
        """The (account, day) of a ledger page."""
        if page_id not in self.pages:
            row = self.conn.execute(
                select(page_accounts.c.account_id, page_accounts.c.day).where(
                    page_accounts.c.page_id == page_id
                )
            ).first()
            self.pages[page_id] = (row.account_id, row.day) if row else None
        return self.pages[page_id]

    def load_holds(self, events: Sequence[tuple[int, Any]]) -> None:
        """The open holds this batch's settlements and releases close, in one query."""
        closing = [
            e.request_id
            for _, e in events
            if isinstance(e, LedgerPage.Settled | LedgerPage.Released)
        ]
        for start in range(0, len(closing), 500):
            rows = self.conn.execute(
                select(open_holds).where(open_holds.c.request_id.in_(closing[start : start + 500]))
            ).all()
            self.holds.update({r.request_id: dict(r._mapping) for r in rows})

    def spend_of(self, key_id: str, period: str) -> dict[str, Any]:
        if (key_id, period) not in self.spend:
            row = self.conn.execute(
                select(key_spend).where(key_spend.c.key_id == key_id, key_spend.c.period == period)
            ).first()
            self.spend[(key_id, period)] = (
                dict(row._mapping)
                if row
                else {"key_id": key_id, "period": period, "spent": 0, "held": 0, "reached": "[]"}
            )
        return self.spend[(key_id, period)]

    def mark(self, table: Table, key: Any, row: dict[str, Any]) -> None:
        self.dirty.setdefault(table, {})[key] = row

    # Events ---------------------------------------------------------------------------------

    def apply(self, position: int, event: Any) -> None:
        if isinstance(event, WebhookEndpoint.Added | WebhookEndpoint.Removed):
            self.endpoint_event(position, event)
        elif type(event) in KEY_EVENTS:
            self.key_event(position, event)
        elif isinstance(event, LedgerPage.Opened):
            page, account = str(event.originator_id), str(event.account_id)
            self.pages[page] = (account, event.day)
            self.mark(
                page_accounts, page, {"page_id": page, "account_id": account, "day": event.day}
            )
            credits = self.account(account) or self.new_account(account)
            credits["balance"] = event.opening_balance
            self.mark(account_credits, account, credits)
        elif isinstance(event, LedgerPage.Funded | LedgerPage.Adjusted | LedgerPage.Settled):
            self.money_event(position, event)
        elif isinstance(event, LedgerPage.Reserved):
            self.reserved(position, event)
        elif isinstance(event, LedgerPage.Released):
            self.close_hold(event.request_id)
        elif isinstance(event, LedgerPage.Refused) and event.reason in LIMIT_REFUSALS:
            self.refused(position, event)

    def endpoint_event(self, position: int, event: Any) -> None:
        if isinstance(event, WebhookEndpoint.Added):
            account = str(event.account_id)
            endpoint = _Endpoint(
                str(event.originator_id), account, list(event.events), position, None
            )
            self.endpoints_of(account).append(endpoint)
            self.mark(
                endpoints,
                endpoint.endpoint_id,
                {
                    "endpoint_id": endpoint.endpoint_id,
                    "account_id": account,
                    "url": event.url,
                    "events": orjson.dumps(endpoint.events).decode(),
                    "created_us": to_us(event.timestamp),
                    "added_position": position,
                    "removed_us": None,
                    "removed_position": None,
                },
            )
            return
        row = self.conn.execute(
            select(endpoints).where(endpoints.c.endpoint_id == str(event.originator_id))
        ).first()
        current = self.dirty.get(endpoints, {}).get(str(event.originator_id))
        values = dict(current or (row._mapping if row else {}))
        if not values:
            return
        values.update(removed_us=to_us(event.timestamp), removed_position=position)
        self.mark(endpoints, values["endpoint_id"], values)
        for endpoint in self.endpoints_of(values["account_id"]):
            if endpoint.endpoint_id == values["endpoint_id"]:
                endpoint.removed_position = position

    def key_event(self, position: int, event: Any) -> None:
        key_id = str(event.originator_id)
        if isinstance(event, ApiKey.Created):
            key: dict[str, Any] | None = {
                "key_id": key_id,
                "account_id": str(event.account_id),
                "name": event.name,
                "display": f"{event.prefix}…{event.last4}",
                "daily_limit": event.daily_limit,
                "monthly_limit": None,
                "meter": None,
                "expiring_subject": None,
            }
        else:
            key = self.key(key_id)
            if key is None:
                return
            key = dict(key)
            if isinstance(event, ApiKey.Scoped):
                key["daily_limit"] = event.daily_limit
            elif isinstance(event, ApiKey.Renamed):
                key["name"] = event.name
            elif isinstance(event, ApiKey.PolicyChanged):
                key["monthly_limit"] = event.monthly_limit
        assert key is not None
        self.keys[key_id] = key
        self.mark(webhook_keys, key_id, key)
        type_ = KEY_EVENTS[type(event)]
        data = {"key": _key_data(key), **_key_event_fields(event)}
        subject = f"event/{event.originator_id}/{event.originator_version}"
        self.send(key["account_id"], type_, subject, position, event.timestamp, data)
        if isinstance(event, ApiKey.PolicyChanged | ApiKey.Rotated | ApiKey.Revoked):
            self.expiry_changed(position, event, key)

    def expiry_changed(self, position: int, event: Any, key: dict[str, Any]) -> None:
        """`key.expiring` is owed 7 days before the key's expiry (at once if that is sooner):
        queued now with that send time, withdrawn if the expiry changes or the key ends first."""
        if key["expiring_subject"]:
            self.withdrawn.append((key["account_id"], key["expiring_subject"]))
            key["expiring_subject"] = None
        expires_at = getattr(event, "expires_at", None)
        if not isinstance(event, ApiKey.PolicyChanged) or expires_at is None:
            return
        subject = f"expiring/{key['key_id']}/{to_us(expires_at)}"
        key["expiring_subject"] = subject
        notice = max(event.timestamp, expires_at - timedelta(days=EXPIRING_NOTICE_DAYS))
        data = {"key": _key_data(key), "expires_at": _iso(expires_at)}
        self.send(
            key["account_id"], "key.expiring", subject, position, event.timestamp, data, notice
        )

    def money_event(self, position: int, event: Any) -> None:
        where = self.page(str(event.originator_id))
        if where is None:
            return
        account_id = where[0]
        credits = self.account(account_id) or self.new_account(account_id)
        if isinstance(event, LedgerPage.Funded):
            credits.update(
                balance=credits["balance"] + event.amount,
                last_funding=event.amount,
                funding_ref=f"{event.originator_id}/{event.originator_version}",
                low_sent=False,
            )
        elif isinstance(event, LedgerPage.Adjusted):
            credits["balance"] += event.amount
        else:
            credits["balance"] -= event.cost
            self.settled(position, event)
        self.mark(account_credits, account_id, credits)
        if not credits["low_sent"] and credits_low(credits["balance"], credits["last_funding"]):
            credits["low_sent"] = True
            data = {
                "account_id": account_id,
                "balance": format_credits(credits["balance"]),
                "last_funding": format_credits(credits["last_funding"]),
                "threshold_percent": LOW_CREDITS_PERCENT,
            }
            subject = f"credits/{account_id}/{credits['funding_ref']}"
            self.send(account_id, "credits.low", subject, position, event.timestamp, data)

    # Budgets: what the ledger checks a key's limits against ----------------------------------

    def reserved(self, position: int, event: LedgerPage.Reserved) -> None:
        key = self.key(event.key_id)
        where = self.page(str(event.originator_id))
        if key is None or where is None or event.amount <= 0:
            return
        meter = getattr(event, "meter", None) or event.key_id
        if key["meter"] != meter:
            key = self.keys[event.key_id] = {**key, "meter": meter}
            self.mark(webhook_keys, event.key_id, key)
        daily, monthly = bool(key["daily_limit"]), bool(key["monthly_limit"])
        if not (daily or monthly):
            return
        day = where[1]
        self.holds[event.request_id] = {
            "request_id": event.request_id,
            "key_id": event.key_id,
            "meter": meter,
            "period": day,
            "amount": event.amount,
            "daily": daily,
            "monthly": monthly,
        }
        self.closed_holds.discard(event.request_id)
        for period in self.periods(key, day, daily, monthly, meter):
            self.budget(position, event, key, period, held=event.amount)

    def settled(self, position: int, event: LedgerPage.Settled) -> None:
        hold = self.close_hold(event.request_id)
        key = self.key(event.key_id)
        if key is None or event.cost <= 0:
            return
        meter = hold["meter"] if hold else (key["meter"] or event.key_id)
        for period in self.periods(key, event.reserved_day, True, True, meter):
            self.budget(position, event, key, period, spent=event.cost)

    def refused(self, position: int, event: LedgerPage.Refused) -> None:
        """The ledger refused a request for the key's limit: it is at 100 %, whatever was spent."""
        key, where = self.key(event.key_id), self.page(str(event.originator_id))
        if key is None or where is None:
            return
        kind = LIMIT_REFUSALS[event.reason]
        meter = key["meter"] or event.key_id
        periods = self.periods(key, where[1], kind == "daily", kind == "monthly", meter)
        for period in periods:
            self.budget(position, event, key, period, at_limit=True)

    @staticmethod
    def periods(
        key: dict[str, Any], day: str, daily: bool, monthly: bool, meter: str
    ) -> list["_Period"]:
        found = []
        if daily:
            found.append(_Period("daily", meter, day, key["daily_limit"]))
        if monthly:
            found.append(_Period("monthly", meter, day[:7], key["monthly_limit"]))
        return found

    def close_hold(self, request_id: str) -> dict[str, Any] | None:
        hold = self.holds.pop(request_id, None)
        if hold is None:
            return None
        self.closed_holds.add(request_id)
        for counted, subject, period in (
            (hold["daily"], hold["meter"], hold["period"]),
            (hold["monthly"], hold["meter"], hold["period"][:7]),
        ):
            if counted:
                spend = self.spend_of(subject, period)
                spend["held"] = max(0, spend["held"] - hold["amount"])
                self.mark(key_spend, (subject, period), spend)
        return hold

    def budget(
        self,
        position: int,
        event: Any,
        key: dict[str, Any],
        period: "_Period",
        *,
        spent: int = 0,
        held: int = 0,
        at_limit: bool = False,
    ) -> None:
        """The period's committed amount (settled + open holds, what the ledger checks the limit
        against) grew, or the ledger refused the key for the limit: the thresholds reached."""
        spend = self.spend_of(period.subject, period.period)
        spend["spent"] += spent
        spend["held"] += held
        self.mark(key_spend, (period.subject, period.period), spend)
        limit = period.limit
        if not limit:
            return
        reached = orjson.loads(spend["reached"])
        committed = limit if at_limit else spend["spent"] + spend["held"]
        for percent in thresholds_reached(committed, limit, reached):
            reached.append(percent)
            data = {
                "key": _key_data(key),
                "period": period.kind,
                ("day" if period.kind == "daily" else "month"): period.period,
                "percent": percent,
                "limit": format_credits(limit),
                "spent": format_credits(spend["spent"]),
                "held": format_credits(spend["held"]),
                "refused": at_limit,
            }
            subject = f"budget/{period.subject}/{period.kind}/{period.period}/{percent}"
            self.send(
                key["account_id"], "budget.threshold", subject, position, event.timestamp, data
            )
        spend["reached"] = orjson.dumps(reached).decode()

    def new_account(self, account_id: str) -> dict[str, Any]:
        row = {
            "account_id": account_id,
            "balance": 0,
            "last_funding": 0,
            "funding_ref": "",
            "low_sent": False,
        }
        self.accounts[account_id] = row
        return row

    # Unexpected usage: the forensics projection's flags -------------------------------------

    def read_flags(self, bound: int) -> None:
        """Flags raised by events up to `bound` (this batch's end) that forensics has applied,
        not read before. A flag forensics has not reached yet is read by a later batch."""
        flags, cursor_table = _live(self.conn, key_flags), outbox_cursor
        cursor = (
            self.conn.execute(
                select(cursor_table.c.position).where(cursor_table.c.name == "flags")
            ).scalar_one_or_none()
            or 0
        )
        upto = min(bound, _own_position(self.conn, "forensics", live=True) or 0)
        if upto <= cursor:
            return
        rows = self.conn.execute(
            select(flags)
            .where(flags.c.position > cursor, flags.c.position <= upto)
            .order_by(flags.c.position, flags.c.kind, flags.c.subject)
        ).all()
        for r in rows:
            key = self.key(r.key_id)
            if key is None:
                continue
            at = from_us(r.at_us)
            assert at is not None
            flag = UsageFlag(
                r.key_id,
                r.kind,
                r.subject,
                at,
                r.position,
                r.client_ip,
                r.user_agent,
                r.amount,
                r.baseline,
            )
            data = {"key": _key_data(key), "flag": flag.as_json()}
            digest = hashlib.sha256(r.subject.encode()).hexdigest()[:32]
            subject = f"flag/{r.key_id}/{r.kind}/{digest}"
            self.send(key["account_id"], "usage.unexpected", subject, r.position, at, data)
        self.conn.execute(delete(cursor_table).where(cursor_table.c.name == "flags"))
        insert_rows(self.conn, cursor_table, [{"name": "flags", "position": upto}])

    # Output ---------------------------------------------------------------------------------

    def send(
        self,
        account_id: str,
        type_: str,
        subject: str,
        position: int,
        at: datetime,
        data: dict[str, Any],
        not_before: datetime | None = None,
    ) -> None:
        """Queue the message for every endpoint of the account owed this type at `position`."""
        body = orjson.dumps({"type": type_, "timestamp": _iso(at), "data": data}).decode()
        for endpoint in self.endpoints_of(account_id):
            if endpoint.owed(type_, position):
                self.messages.append(
                    {
                        "message_id": message_id(endpoint.endpoint_id, subject),
                        "endpoint_id": endpoint.endpoint_id,
                        "account_id": account_id,
                        "type": type_,
                        "body": body,
                        "position": position,
                        "at_us": to_us(at),
                        "not_before_us": to_us(not_before or at),
                        "withdrawn": False,
                    }
                )

    def write(self, seq: int) -> None:
        for message in self.messages:
            message["seq"] = seq
        for table, rows in self.dirty.items():
            if not rows:
                continue
            primary = list(table.primary_key.columns)
            if len(primary) == 1:
                self.conn.execute(delete(table).where(primary[0].in_(list(rows))))
            else:
                self.conn.execute(delete(table).where(tuple_(*primary).in_(list(rows))))
            insert_rows(self.conn, table, [_only(table, row) for row in rows.values()])
        closed = list(self.closed_holds)
        for start in range(0, len(closed), 500):
            chunk = closed[start : start + 500]
            self.conn.execute(delete(open_holds).where(open_holds.c.request_id.in_(chunk)))
        insert_rows(self.conn, open_holds, list(self.holds.values()))
        self.withdraw()
        insert_rows(self.conn, messages, self.messages)

    def withdraw(self) -> None:
        """Messages no longer owed (a key's expiry changed before its notice was due) are marked,
        not deleted: the deliverer skips them, and what was sent stays in the delivery log."""
        ids = {
            message_id(endpoint.endpoint_id, subject)
            for account_id, subject in self.withdrawn
            for endpoint in self.endpoints_of(account_id)
        }
        if not ids:
            return
        for message in self.messages:
            if message["message_id"] in ids:
                message["withdrawn"] = True
        self.conn.execute(
            update(messages).where(messages.c.message_id.in_(sorted(ids))).values(withdrawn=True)
        )


def _only(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    return {column.name: row.get(column.name) for column in table.columns}


def _key_data(key: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": key["key_id"],
        "account_id": key["account_id"],
        "name": key["name"],
        "display": key["display"],
    }


def _key_event_fields(event: Any) -> dict[str, Any]:
    actor = {"actor": getattr(event, "actor", None)}
    if isinstance(event, ApiKey.Created | ApiKey.Scoped):
        limit = event.daily_limit
        return {
            "models": event.models,
            "region": event.region,
            "daily_limit": format_credits(limit) if limit is not None else None,
            **actor,
        }
    if isinstance(event, ApiKey.PolicyChanged):
        monthly = event.monthly_limit
        return {
            "expires_at": _iso(event.expires_at) if event.expires_at else None,
            "requests_per_minute": event.requests_per_minute,
            "tokens_per_minute": event.tokens_per_minute,
            "max_concurrent": event.max_concurrent,
            "allowed_ips": event.allowed_ips,
            "monthly_limit": format_credits(monthly) if monthly is not None else None,
            **actor,
        }
    if isinstance(event, ApiKey.Rotated):
        return {
            "successor_id": str(event.successor_id),
            "grace_deadline": _iso(event.grace_deadline),
            **actor,
        }
    if isinstance(event, ApiKey.Revoked):
        return {"reason": event.reason, **actor}
    if isinstance(event, LeakReported):
        return {"url": event.url, "source": event.source, **actor}
    return actor


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


_live_tables: dict[tuple[str, str], Table] = {}


def _live(conn: Connection, table: Table) -> Table:
    """`table` in the live schema even while an online rebuild points this connection's
    statements at its shadow schema (projections/rebuild.py): another projection's tables are
    only ever live."""
    if not conn.get_execution_options().get("schema_translate_map"):
        return table
    schema = conn.dialect.default_schema_name or "main"
    cached = _live_tables.get((table.name, schema))
    if cached is None:
        cached = _live_tables[(table.name, schema)] = table.to_metadata(MetaData(), schema=schema)
    return cached


def _own_position(conn: Connection, name: str, live: bool = False) -> int | None:
    """A projection's position as this transaction sees it (the runner has already moved this
    projection's own position to the batch's end); None during an online rebuild."""
    if conn.get_execution_options().get("schema_translate_map") and not live:
        return None
    table = _live(conn, positions)
    value = conn.execute(select(table.c.position).where(table.c.name == name)).scalar_one_or_none()
    return None if value is None else int(value)


# Reading ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointView:
    id: str
    account_id: str
    url: str
    events: list[str]
    created_at: datetime
    removed_at: datetime | None


def _endpoint_view(row: Any) -> EndpointView:
    created = from_us(row.created_us)
    assert created is not None
    return EndpointView(
        row.endpoint_id,
        row.account_id,
        row.url,
        orjson.loads(row.events),
        created,
        from_us(row.removed_us),
    )


def endpoints_of_account(engine: Engine, account_id: UUID) -> list[EndpointView]:
    """The account's endpoints that were not removed, oldest first."""
    query = (
        select(endpoints)
        .where(endpoints.c.account_id == str(account_id), endpoints.c.removed_us.is_(None))
        .order_by(endpoints.c.created_us)
    )
    with engine.connect() as conn:
        return [_endpoint_view(row) for row in conn.execute(query).all()]


@dataclass(frozen=True)
class DeliveryRow:
    event_id: str  # the message id: the webhook-id of every attempt
    type: str
    attempt: int  # 0: not attempted yet
    status_code: int | None
    attempted_at: datetime | None
    delivered_at: datetime | None
    next_attempt_at: datetime | None
    error: str | None


def deliveries_of_endpoint(
    engine: Engine, endpoint_id: UUID, limit: int = 200
) -> list[DeliveryRow]:
    """The endpoint's messages, newest first, one row per attempt (a message not attempted yet
    shows as attempt 0 with the time it is due)."""
    where = messages.c.endpoint_id == str(endpoint_id)
    with engine.connect() as conn:
        recent = conn.execute(
            select(
                messages.c.message_id,
                messages.c.type,
                messages.c.not_before_us,
                messages.c.withdrawn,
            )
            .where(where)
            .order_by(messages.c.position.desc())
            .limit(limit)
        ).all()
        ids = [r.message_id for r in recent]
        tried = (
            conn.execute(
                select(attempts).where(attempts.c.message_id.in_(ids)).order_by(attempts.c.attempt)
            ).all()
            if ids
            else []
        )
        states = (
            {
                s.message_id: s
                for s in conn.execute(
                    select(delivery_state).where(delivery_state.c.message_id.in_(ids))
                ).all()
            }
            if ids
            else {}
        )
    by_message: dict[str, list[Any]] = {}
    for row in tried:
        by_message.setdefault(row.message_id, []).append(row)
    rows: list[DeliveryRow] = []
    for message in recent:
        done = by_message.get(message.message_id, [])
        for a in reversed(done):
            rows.append(
                DeliveryRow(
                    message.message_id,
                    message.type,
                    a.attempt,
                    a.status_code,
                    from_us(a.at_us),
                    from_us(a.at_us) if a.delivered else None,
                    from_us(a.next_attempt_us),
                    a.error,
                )
            )
        if not done and not message.withdrawn:
            state = states.get(message.message_id)
            due = state.next_attempt_us if state is not None else message.not_before_us
            rows.append(
                DeliveryRow(
                    message.message_id, message.type, 0, None, None, None, from_us(due), None
                )
            )
    return rows


def import_new_messages(engine: Engine, limit: int = 5000) -> int:
    """Give every message written since the last look a delivery state (pending, due at its
    send time). Several deliverers may do it at once: a state that exists is left alone."""
    with engine.begin() as conn:
        cursor = conn.execute(
            select(imported.c.seq).where(imported.c.name == "messages")
        ).scalar_one_or_none()
        if cursor is None:
            _insert_ignoring_duplicates(conn, imported, [{"name": "messages", "seq": 0}], "name")
            cursor = 0
        last = conn.execute(
            select(messages.c.seq)
            .where(messages.c.seq > cursor)
            .order_by(messages.c.seq)
            .limit(1)
            .offset(limit - 1)
        ).scalar_one_or_none()
        upto = (
            last
            if last is not None
            else conn.execute(select(func.max(messages.c.seq))).scalar_one_or_none()
        )
        if upto is None or upto <= cursor:
            return 0
        rows = conn.execute(
            select(messages.c.message_id, messages.c.not_before_us).where(
                messages.c.seq > cursor, messages.c.seq <= upto
            )
        ).all()
        states = [
            {
                "message_id": r.message_id,
                "attempts": 0,
                "next_attempt_us": r.not_before_us,
                "lease_until_us": None,
                "delivered_us": None,
                "gave_up": False,
                "pending": True,
            }
            for r in rows
        ]
        _insert_ignoring_duplicates(conn, delivery_state, states, "message_id")
        conn.execute(
            update(imported)
            .where(imported.c.name == "messages", imported.c.seq < upto)
            .values(seq=upto)
        )
        return len(states)


def _insert_ignoring_duplicates(
    conn: Connection, table: Table, rows: list[dict[str, Any]], key: str
) -> None:
    if not rows:
        return
    statement: Insert
    if conn.dialect.name == "postgresql":
        statement = postgresql_insert(table).on_conflict_do_nothing(index_elements=[key])
    else:
        statement = sqlite_insert(table).on_conflict_do_nothing(index_elements=[key])
    for start in range(0, len(rows), 1000):
        conn.execute(statement, rows[start : start + 1000])


def due_messages(engine: Engine, now_us: int, limit: int, skip: Iterable[str] = ()) -> list[Any]:
    """Pending messages due now and not leased by another deliverer, soonest first; with
    whether they are still owed (not withdrawn, their endpoint not removed)."""
    state = delivery_state
    query = (
        select(
            messages.c.message_id,
            messages.c.endpoint_id,
            messages.c.body,
            messages.c.withdrawn,
            endpoints.c.url,
            endpoints.c.removed_us,
            state.c.attempts,
        )
        .join(messages, messages.c.message_id == state.c.message_id)
        .join(endpoints, endpoints.c.endpoint_id == messages.c.endpoint_id)
        .where(
            state.c.pending.is_(True),
            state.c.next_attempt_us <= now_us,
            or_(state.c.lease_until_us.is_(None), state.c.lease_until_us < now_us),
        )
        .order_by(state.c.next_attempt_us)
        .limit(limit)
    )
    skipped = list(skip)
    if skipped:
        query = query.where(messages.c.endpoint_id.not_in(skipped))
    with engine.connect() as conn:
        return list(conn.execute(query).all())


def drop_messages(engine: Engine, message_ids: Sequence[str]) -> None:
    """No longer owed (withdrawn, or the endpoint was removed): never sent."""
    if message_ids:
        with engine.begin() as conn:
            conn.execute(
                update(delivery_state)
                .where(delivery_state.c.message_id.in_(list(message_ids)))
                .values(pending=False, lease_until_us=None)
            )
