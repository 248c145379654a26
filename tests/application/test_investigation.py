"""The leak investigation as a use case (application.investigation) on the in-memory store, its
read models a port the test answers: the window it asks about ends when the key stopped working,
and the report's figures are those of the window. The SQL side runs end to end in
tests/audit/test_investigate.py."""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID

from application.app import Lowrouter
from application.investigation import (
    ClientSeen,
    HourSpend,
    ModelUse,
    UsageFlag,
    investigate_key,
)
from domain.scope import Scope
from infrastructure.persistence import eventsourcing_env
from tests.support.spend import OPERATOR, MutableClock

T0 = datetime(2031, 3, 14, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


@dataclass
class Reads:
    """The port, answering fixed figures and remembering what it was asked."""

    clients: list[ClientSeen]
    hours: list[HourSpend]
    asked: list[tuple[UUID, datetime | None, datetime]] = field(default_factory=list)

    def clients_of_key(self, key_id: UUID) -> list[ClientSeen]:
        return self.clients

    def models_of_key(self, key_id: UUID) -> list[ModelUse]:
        return [ModelUse("m", 3, 30, T0, T0 + HOUR)]

    def spend_per_hour(
        self, key_id: UUID, since: datetime | None, until: datetime
    ) -> list[HourSpend]:
        self.asked.append((key_id, since, until))
        return self.hours

    def flags_of_key(self, key_id: UUID) -> list[UsageFlag]:
        return []


def test_the_window_ends_at_the_revocation_and_the_report_sums_it() -> None:
    clock = MutableClock(T0)
    app = Lowrouter(eventsourcing_env("memory://"), pepper=b"pepper", clock=clock)
    account = app.open_account("acme", OPERATOR, credits=100).account.id
    key = app.create_key(account, "k", Scope(), OPERATOR).key.id
    clock.advance(2 * HOUR)
    app.revoke_key(key, OPERATOR, "leak")
    revoked_at = clock.now
    old = ClientSeen("10.0.0.1", "curl", T0, T0 + HOUR, 2, 20)
    new = ClientSeen("192.0.2.9", "python", T0 + HOUR, T0 + HOUR, 1, 10)
    reads = Reads([old, new], [HourSpend(T0, 2, 20), HourSpend(T0 + HOUR, 1, 10)])
    since = T0 + HOUR / 2

    report = investigate_key(app, reads, key, since, now=revoked_at + 5 * HOUR)

    assert reads.asked == [(key, since, revoked_at + timedelta(microseconds=1))]
    assert report.until == revoked_at + timedelta(microseconds=1)
    assert report.key.id == key and report.key.revoked_at == revoked_at
    assert (report.window_requests, report.window_cost) == (3, 30)
    assert (report.first_used, report.last_used) == (T0, T0 + HOUR)
    assert [report.new_since(c) for c in report.clients] == [False, True]
    assert report.attempts_after_revocation == 0
    app.close()


def test_a_key_still_working_is_investigated_up_to_now() -> None:
    app = Lowrouter(eventsourcing_env("memory://"), pepper=b"pepper", clock=MutableClock(T0))
    account = app.open_account("acme", OPERATOR, credits=100).account.id
    key = app.create_key(account, "k", Scope(), OPERATOR).key.id
    reads = Reads([], [])
    now = T0 + HOUR
    report = investigate_key(app, reads, key, None, now)
    assert reads.asked == [(key, None, now + timedelta(microseconds=1))]
    assert (report.window_requests, report.first_used, report.since) == (0, None, None)
    app.close()
