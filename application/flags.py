"""Acknowledging an unexpected-usage flag: an event on the key, seen in its history."""

from uuid import UUID

from application.app import Lowrouter
from application.retry import retry_on_conflict
from domain.actor import Actor


def acknowledge_flag(
    app: Lowrouter,
    key_id: UUID,
    kind: str,
    subject: str,
    actor: Actor,
    account_id: UUID | None = None,
) -> bool:
    """Record that the owner accepted the flag; False if it already was (nothing recorded).
    A key of another account is as missing as an unknown one."""

    def command() -> bool:
        key = app.get_key(key_id, account_id)
        recorded = key.acknowledge_flag(kind, subject, actor, app.clock())
        if recorded:
            app.save(key)
        return recorded

    return retry_on_conflict(command)
