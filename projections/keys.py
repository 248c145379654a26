"""The active-key lookup: every inference and management key by token hash, with its scope and
status. Revocation and scope changes are visible here before the command that made them returns."""

from collections.abc import Sequence
from typing import Any

import orjson
from eventsourcing.utils import get_topic
from sqlalchemy import Connection, insert, select, update

from domain.accounts import Account
from domain.keys import ApiKey
from domain.tokens import TokenKind
from projections.schema import accounts, keys, to_us


class KeyLookupProjection:
    name = "keys"
    schema_version = 3  # 2: the key policy's columns; 3: lineage_id
    tables = (keys, accounts)
    topics = tuple(
        get_topic(cls)
        for cls in (
            ApiKey.Created,
            ApiKey.Scoped,
            ApiKey.PolicyChanged,
            ApiKey.Renamed,
            ApiKey.Rotated,
            ApiKey.Revoked,
            Account.Opened,
            Account.ManagementKeyIssued,
            Account.ManagementKeyRevoked,
            Account.ManagementKeyRotated,
        )
    )

    def apply(self, conn: Connection, events: Sequence[tuple[int, Any]]) -> None:
        for _position, event in events:
            handler = getattr(self, "_" + type(event).__qualname__.replace(".", "_"), None)
            if handler is not None:
                handler(conn, event)

    def _ApiKey_Created(self, conn: Connection, e: ApiKey.Created) -> None:
        conn.execute(
            insert(keys).values(
                key_id=str(e.originator_id),
                token_hash=e.token_hash,
                kind=TokenKind.INFERENCE.code,
                account_id=str(e.account_id),
                name=e.name,
                prefix=e.prefix,
                last4=e.last4,
                models=_models(e.models),
                region=e.region,
                daily_limit=e.daily_limit,
                status="active",
                created_us=to_us(e.timestamp),
                predecessor_id=str(e.predecessor_id) if e.predecessor_id else None,
                lineage_id=_lineage(conn, e.originator_id, e.predecessor_id),
            )
        )

    def _ApiKey_Scoped(self, conn: Connection, e: ApiKey.Scoped) -> None:
        self._update(
            conn,
            e.originator_id,
            models=_models(e.models),
            region=e.region,
            daily_limit=e.daily_limit,
        )

    def _ApiKey_PolicyChanged(self, conn: Connection, e: ApiKey.PolicyChanged) -> None:
        self._update(
            conn,
            e.originator_id,
            expires_us=to_us(e.expires_at) if e.expires_at is not None else None,
            requests_per_minute=e.requests_per_minute,
            tokens_per_minute=e.tokens_per_minute,
            max_concurrent=e.max_concurrent,
            allowed_ips=orjson.dumps(e.allowed_ips).decode() if e.allowed_ips is not None else None,
            monthly_limit=e.monthly_limit,
        )

    def _ApiKey_Renamed(self, conn: Connection, e: ApiKey.Renamed) -> None:
        self._update(conn, e.originator_id, name=e.name)

    def _ApiKey_Rotated(self, conn: Connection, e: ApiKey.Rotated) -> None:
        self._update(
            conn,
            e.originator_id,
            status="rotating",
            successor_id=str(e.successor_id),
            grace_deadline_us=to_us(e.grace_deadline),
        )

    def _ApiKey_Revoked(self, conn: Connection, e: ApiKey.Revoked) -> None:
        self._update(conn, e.originator_id, status="revoked", revoked_us=to_us(e.timestamp))

    def _Account_Opened(self, conn: Connection, e: Account.Opened) -> None:
        conn.execute(
            insert(accounts).values(
                account_id=str(e.originator_id), name=e.name, opened_us=to_us(e.timestamp)
            )
        )

    def _Account_ManagementKeyIssued(
        self, conn: Connection, e: Account.ManagementKeyIssued
    ) -> None:
        conn.execute(
            insert(keys).values(
                key_id=str(e.key_id),
                token_hash=e.token_hash,
                kind=TokenKind.MANAGEMENT.code,
                account_id=str(e.originator_id),
                name=e.name,
                prefix=e.prefix,
                last4=e.last4,
                status="active",
                created_us=to_us(e.timestamp),
                predecessor_id=str(e.predecessor_id) if e.predecessor_id else None,
            )
        )

    def _Account_ManagementKeyRotated(
        self, conn: Connection, e: Account.ManagementKeyRotated
    ) -> None:
        self._update(
            conn,
            e.key_id,
            status="rotating",
            successor_id=str(e.successor_id),
            grace_deadline_us=to_us(e.grace_deadline),
        )

    def _Account_ManagementKeyRevoked(
        self, conn: Connection, e: Account.ManagementKeyRevoked
    ) -> None:
        self._update(conn, e.key_id, status="revoked", revoked_us=to_us(e.timestamp))

    @staticmethod
    def _update(conn: Connection, key_id: object, **values: Any) -> None:
        conn.execute(update(keys).where(keys.c.key_id == str(key_id)).values(**values))


def _lineage(conn: Connection, key_id: object, predecessor_id: object | None) -> str:
    """A rotation's successor belongs to its predecessor's lineage (the predecessor was created,
    and projected, before it); a key issued afresh starts its own."""
    if predecessor_id is None:
        return str(key_id)
    found = conn.execute(
        select(keys.c.lineage_id).where(keys.c.key_id == str(predecessor_id))
    ).scalar_one_or_none()
    return str(found or predecessor_id)


def _models(models: list[str] | None) -> str | None:
    return orjson.dumps(models).decode() if models is not None else None
