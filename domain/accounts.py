"""The Account aggregate: an owner's name, its management keys and the list of its API keys.
Money lives on the account's ledger pages (domain/ledger.py), not here."""

from datetime import datetime, timedelta
from typing import NotRequired, TypedDict
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.actor import Actor, ActorFields
from domain.errors import DomainError, NotFound
from domain.rotation import check_grace
from domain.scope import check_name

DEFAULT_MANAGEMENT_KEY_NAME = "management key"


class ManagementKeyEntry(TypedDict):
    """One management key as its Account keeps it (and a snapshot stores it). An entry restored
    from a snapshot taken before 0.3 has only the first three; its events add the rest."""

    token_hash: str
    display: str  # prefix…last4
    revoked: bool
    name: NotRequired[str]
    prefix: NotRequired[str]
    last4: NotRequired[str]
    created_at: NotRequired[datetime]
    revoked_at: NotRequired[datetime | None]
    grace_deadline: NotRequired[datetime | None]
    successor_id: NotRequired[str | None]
    predecessor_id: NotRequired[str | None]


def management_key_status(entry: ManagementKeyEntry, now: datetime) -> str:
    """ "active", "rotating" (a successor exists; works until its grace ends) or "revoked"."""
    if entry["revoked"]:
        return "revoked"
    deadline = entry.get("grace_deadline")
    if deadline is not None:
        return "rotating" if now < deadline else "revoked"
    return "active"


class Account(Aggregate):
    class Opened(Aggregate.Created):
        name: str
        actor: ActorFields

    class ManagementKeyIssued(Aggregate.Event):
        key_id: UUID
        token_hash: str
        prefix: str
        last4: str
        actor: ActorFields
        name: str = DEFAULT_MANAGEMENT_KEY_NAME  # absent from events recorded before 0.3
        predecessor_id: UUID | None = None

        def apply(self, account: "Account") -> None:
            account.management_keys[str(self.key_id)] = {
                "token_hash": self.token_hash,
                "name": self.name,
                "prefix": self.prefix,
                "last4": self.last4,
                "display": f"{self.prefix}…{self.last4}",
                "revoked": False,
                "created_at": self.timestamp,
                "revoked_at": None,
                "grace_deadline": None,
                "successor_id": None,
                "predecessor_id": str(self.predecessor_id) if self.predecessor_id else None,
            }

    class ManagementKeyRevoked(Aggregate.Event):
        key_id: UUID
        actor: ActorFields

        def apply(self, account: "Account") -> None:
            entry = account.management_keys[str(self.key_id)]
            entry["revoked"] = True
            entry["revoked_at"] = self.timestamp

    class ManagementKeyRotated(Aggregate.Event):
        """A successor was issued (its own ManagementKeyIssued event, in the same save); this
        key keeps working until `grace_deadline`."""

        key_id: UUID
        successor_id: UUID
        grace_deadline: datetime
        actor: ActorFields

        def apply(self, account: "Account") -> None:
            entry = account.management_keys[str(self.key_id)]
            entry["successor_id"] = str(self.successor_id)
            entry["grace_deadline"] = self.grace_deadline

    class ApiKeyAdded(Aggregate.Event):
        key_id: UUID

        def apply(self, account: "Account") -> None:
            account.api_key_ids.append(self.key_id)

    def __init__(self, name: str, actor: ActorFields) -> None:
        self.name = name
        self.management_keys: dict[str, ManagementKeyEntry] = {}
        self.api_key_ids: list[UUID] = []

    @classmethod
    def open(cls, account_id: UUID, name: str, actor: Actor, at: datetime) -> "Account":
        return cls._create(
            cls.Opened, id=account_id, name=check_name(name), actor=actor.as_dict(), timestamp=at
        )

    def issue_management_key(
        self,
        key_id: UUID,
        token_hash: str,
        prefix: str,
        last4: str,
        actor: Actor,
        at: datetime,
        name: str = DEFAULT_MANAGEMENT_KEY_NAME,
        predecessor_id: UUID | None = None,
    ) -> None:
        self.trigger_event(
            self.ManagementKeyIssued,
            key_id=key_id,
            token_hash=token_hash,
            prefix=prefix,
            last4=last4,
            actor=actor.as_dict(),
            name=check_name(name),
            predecessor_id=predecessor_id,
            timestamp=at,
        )

    def management_key(self, key_id: UUID) -> ManagementKeyEntry:
        entry = self.management_keys.get(str(key_id))
        if entry is None:
            raise NotFound(f"no management key {key_id} on this account")
        return entry

    def check_can_revoke_management_key(
        self, key_id: UUID, at: datetime, using: UUID | None = None
    ) -> None:
        """Refuse revoking a dead key, and a caller revoking the key it uses when no other
        active one would remain (it would lock the account's owner out of the API)."""
        entry = self.management_key(key_id)
        if management_key_status(entry, at) == "revoked":
            raise DomainError(f"management key {entry['display']} is already revoked")
        if using == key_id and not any(
            other != str(key_id) and management_key_status(e, at) == "active"
            for other, e in self.management_keys.items()
        ):
            raise DomainError(
                f"management key {entry['display']} is the one this request uses and the only "
                "active one: create another first"
            )

    def revoke_management_key(
        self, key_id: UUID, actor: Actor, at: datetime, using: UUID | None = None
    ) -> None:
        self.check_can_revoke_management_key(key_id, at, using)
        self.trigger_event(
            self.ManagementKeyRevoked, key_id=key_id, actor=actor.as_dict(), timestamp=at
        )

    def rotate_management_key(
        self,
        key_id: UUID,
        successor_id: UUID,
        token_hash: str,
        prefix: str,
        last4: str,
        grace: timedelta,
        actor: Actor,
        at: datetime,
    ) -> None:
        """Issue a successor with the same name; the old key works until the grace ends."""
        check_grace(grace)
        entry = self.management_key(key_id)
        if management_key_status(entry, at) != "active":
            raise DomainError(
                f"management key {entry['display']} is {management_key_status(entry, at)}; "
                "only an active key can be rotated"
            )
        self.issue_management_key(
            successor_id, token_hash, prefix, last4, actor, at, entry["name"], key_id
        )
        self.trigger_event(
            self.ManagementKeyRotated,
            key_id=key_id,
            successor_id=successor_id,
            grace_deadline=at + grace,
            actor=actor.as_dict(),
            timestamp=at,
        )

    def add_api_key(self, key_id: UUID, at: datetime) -> None:
        self.trigger_event(self.ApiKeyAdded, key_id=key_id, timestamp=at)
