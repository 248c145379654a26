"""The Account aggregate: an owner's name, its management keys and the list of its API keys.
Money lives on the account's ledger pages (domain/ledger.py), not here."""

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.actor import Actor
from domain.errors import DomainError, NotFound
from domain.scope import check_name


class Account(Aggregate):
    class Opened(Aggregate.Created):
        name: str
        actor: dict[str, Any]

    class ManagementKeyIssued(Aggregate.Event):
        key_id: UUID
        token_hash: str
        prefix: str
        last4: str
        actor: dict[str, Any]

        def apply(self, account: "Account") -> None:
            account.management_keys[str(self.key_id)] = {
                "token_hash": self.token_hash,
                "display": f"{self.prefix}…{self.last4}",
                "revoked": False,
            }

    class ManagementKeyRevoked(Aggregate.Event):
        key_id: UUID
        actor: dict[str, Any]

        def apply(self, account: "Account") -> None:
            account.management_keys[str(self.key_id)]["revoked"] = True

    class ApiKeyAdded(Aggregate.Event):
        key_id: UUID

        def apply(self, account: "Account") -> None:
            account.api_key_ids.append(self.key_id)

    def __init__(self, name: str, actor: dict[str, Any]) -> None:
        self.name = name
        self.management_keys: dict[str, dict[str, Any]] = {}
        self.api_key_ids: list[UUID] = []

    @classmethod
    def open(cls, account_id: UUID, name: str, actor: Actor, at: datetime) -> "Account":
        return cls._create(
            cls.Opened, id=account_id, name=check_name(name), actor=actor.as_dict(), timestamp=at
        )

    def issue_management_key(
        self, key_id: UUID, token_hash: str, prefix: str, last4: str, actor: Actor, at: datetime
    ) -> None:
        self.trigger_event(
            self.ManagementKeyIssued,
            key_id=key_id,
            token_hash=token_hash,
            prefix=prefix,
            last4=last4,
            actor=actor.as_dict(),
            timestamp=at,
        )

    def revoke_management_key(self, key_id: UUID, actor: Actor, at: datetime) -> None:
        entry = self.management_keys.get(str(key_id))
        if entry is None:
            raise NotFound(f"no management key {key_id} on this account")
        if entry["revoked"]:
            raise DomainError(f"management key {entry['display']} is already revoked")
        self.trigger_event(
            self.ManagementKeyRevoked, key_id=key_id, actor=actor.as_dict(), timestamp=at
        )

    def add_api_key(self, key_id: UUID, at: datetime) -> None:
        self.trigger_event(self.ApiKeyAdded, key_id=key_id, timestamp=at)
