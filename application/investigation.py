"""The leak investigation (`lowrouter investigate`): everything known about one key's use, its
history from the events and its uses from the forensics read models, which it takes as a port
(`KeyUseReads`; projections.queries.forensics.ForensicsReads reads them from the database).

The value types are the port's: the read models answer in them.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

from application.app import Lowrouter
from application.replay import KeyHistory, key_history
from domain.flags import NEW_ADDRESS, NEW_USER_AGENT, OVER_HOLD, SPIKE_FACTOR
from domain.keys import ApiKey
from domain.money import format_credits


@dataclass(frozen=True)
class UsageFlag:
    key_id: str
    kind: str  # new_address | new_user_agent | spend_spike | over_hold
    subject: str  # the new address or agent, the day of the spike, or the request id
    at: datetime
    position: int
    client_ip: str | None
    user_agent: str | None
    amount: int | None  # spend_spike: the day's spend; over_hold: the unbilled (micro-credits)
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
        if self.kind == OVER_HOLD:
            return (
                f"request {self.subject} used more than its hold: "
                f"{format_credits(self.amount or 0)} served and not charged"
            )
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


@dataclass(frozen=True)
class ClientSeen:
    client_ip: str | None
    user_agent: str | None
    first_seen: datetime
    last_seen: datetime
    requests: int
    cost: int


@dataclass(frozen=True)
class ModelUse:
    model: str
    requests: int
    cost: int
    first_used: datetime
    last_used: datetime
    apis: tuple[str, ...] = ()  # the inference APIs it was called through


@dataclass(frozen=True)
class HourSpend:
    hour: datetime
    requests: int
    cost: int


class KeyUseReads(Protocol):
    """What the investigation reads about a key's use (the forensics and usage read models)."""

    def clients_of_key(self, key_id: UUID) -> list[ClientSeen]: ...

    def models_of_key(self, key_id: UUID) -> list[ModelUse]: ...

    def spend_per_hour(
        self, key_id: UUID, since: datetime | None, until: datetime
    ) -> list[HourSpend]: ...

    def flags_of_key(self, key_id: UUID) -> list[UsageFlag]: ...


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
    app: Lowrouter, reads: KeyUseReads, key_id: UUID, since: datetime | None, now: datetime
) -> KeyInvestigation:
    """A key's investigation: its events from the log, its uses from the read models."""
    history = key_history(app, key_id)
    key = history.state
    assert key is not None
    until = _end_of_use(key, now)
    return KeyInvestigation(
        history=history,
        since=since,
        until=until,
        clients=reads.clients_of_key(key_id),
        models=reads.models_of_key(key_id),
        hours=reads.spend_per_hour(key_id, since, until),
        flags=reads.flags_of_key(key_id),
    )


def _end_of_use(key: ApiKey, now: datetime) -> datetime:
    """When the key stopped working (revoked, its rotation grace ended, or it expired: the access
    policy's answer), else now. The window ends just after a revocation or now, so a request in
    the same microsecond is counted; a deadline is the first moment the key was refused."""
    access = key.access_at(now)
    if access.state == "revoked" and key.revoked_at is not None:
        return key.revoked_at + timedelta(microseconds=1)
    if access.ended and access.ended_at is not None:
        return access.ended_at
    return now + timedelta(microseconds=1)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
