"""Management keys as first-class keys: list, issue (token once), revoke, rotate with grace.

Each use case loads the account, calls one domain method, saves, and returns only once the key
lookup every process reads shows the change (`application.access_barrier`), so a revoked
management key fails on the next request on every process and its dashboard sessions end there
too.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import Recording

from application.access_barrier import await_access
from application.app import Lowrouter
from application.events import stored_events
from application.retry import retry_on_conflict
from domain.accounts import (
    DEFAULT_MANAGEMENT_KEY_NAME,
    ManagementKeyEntry,
    management_key_status,
)
from domain.actor import Actor, ActorFields
from domain.tokens import Token, TokenKind, generate_token, hash_token


@dataclass(frozen=True)
class ManagementKey:
    """What may be shown of a management key: never its token or hash."""

    id: UUID
    account_id: UUID
    name: str
    prefix: str
    last4: str
    status: str  # "active" | "rotating" | "revoked"
    created_at: datetime | None
    revoked_at: datetime | None
    grace_deadline: datetime | None
    predecessor_id: str | None
    successor_id: str | None

    @property
    def display(self) -> str:
        return f"{self.prefix}…{self.last4}"


@dataclass(frozen=True)
class IssuedManagementKey:
    key: ManagementKey
    token: Token


def _view(account_id: UUID, key_id: str, entry: ManagementKeyEntry, now: datetime) -> ManagementKey:
    prefix, last4 = entry.get("prefix"), entry.get("last4")
    if prefix is None or last4 is None:  # a state recorded before 0.3 kept only the display
        prefix, _, last4 = entry["display"].partition("…")
    return ManagementKey(
        id=UUID(key_id),
        account_id=account_id,
        name=entry.get("name", DEFAULT_MANAGEMENT_KEY_NAME),
        prefix=prefix,
        last4=last4,
        status=management_key_status(entry, now),
        created_at=entry.get("created_at"),
        revoked_at=entry.get("revoked_at"),
        grace_deadline=entry.get("grace_deadline"),
        predecessor_id=entry.get("predecessor_id"),
        successor_id=entry.get("successor_id"),
    )


def list_management_keys(app: Lowrouter, account_id: UUID) -> list[ManagementKey]:
    """Every management key of the account, oldest first."""
    account, now = app.get_account(account_id), app.clock()
    return [_view(account.id, kid, e, now) for kid, e in account.management_keys.items()]


def get_management_key(app: Lowrouter, account_id: UUID, key_id: UUID) -> ManagementKey:
    account = app.get_account(account_id)
    return _view(account.id, str(key_id), account.management_key(key_id), app.clock())


def issue_management_key(
    app: Lowrouter, account_id: UUID, actor: Actor, name: str = DEFAULT_MANAGEMENT_KEY_NAME
) -> IssuedManagementKey:
    token = generate_token(TokenKind.MANAGEMENT)
    key_id = uuid4()

    def command() -> list[Recording[UUID]]:
        account = app.get_account(account_id)
        account.issue_management_key(
            key_id,
            hash_token(app.pepper, token),
            token.value[:10],
            token.last4,
            actor,
            app.clock(),
            name,
        )
        return app.save(account)

    await_access(app.access_barrier, retry_on_conflict(command))
    return IssuedManagementKey(get_management_key(app, account_id, key_id), token)


def revoke_management_key(
    app: Lowrouter, account_id: UUID, key_id: UUID, actor: Actor, using: UUID | None = None
) -> ManagementKey:
    """Revoke; `using` is the key the request itself is authenticated with (see the domain)."""

    def command() -> list[Recording[UUID]]:
        account = app.get_account(account_id)
        account.revoke_management_key(key_id, actor, app.clock(), using)
        return app.save(account)

    await_access(app.access_barrier, retry_on_conflict(command))
    return get_management_key(app, account_id, key_id)


def rotate_management_key(
    app: Lowrouter,
    account_id: UUID,
    key_id: UUID,
    actor: Actor,
    grace: timedelta = timedelta(0),
) -> IssuedManagementKey:
    token = generate_token(TokenKind.MANAGEMENT)
    successor_id = uuid4()

    def command() -> list[Recording[UUID]]:
        account = app.get_account(account_id)
        account.rotate_management_key(
            key_id,
            successor_id,
            hash_token(app.pepper, token),
            token.value[:10],
            token.last4,
            grace,
            actor,
            app.clock(),
        )
        return app.save(account)

    await_access(app.access_barrier, retry_on_conflict(command))
    return IssuedManagementKey(get_management_key(app, account_id, successor_id), token)


Event = Aggregate.Event


@dataclass(frozen=True)
class ManagementKeyReport:
    """What a leaked management key is and what was done with it: its own lifecycle (issued,
    rotated, revoked) and every change made by a caller presenting it (keys created, revoked,
    …), each with the time and the client address."""

    key: ManagementKey
    lifecycle: list[Event]
    actions: list[Event]


def investigate_management_key(
    app: Lowrouter, account_id: UUID, key_id: UUID
) -> ManagementKeyReport:
    key = get_management_key(app, account_id, key_id)
    account = app.get_account(account_id)
    account_events = list(stored_events(app, account.id))
    lifecycle = [e for e in account_events if getattr(e, "key_id", None) == key_id]
    streams = [account_events, *(list(stored_events(app, k)) for k in account.api_key_ids)]
    actions = sorted(
        (event for events in streams for event in events if _made_with(event, key.display)),
        key=lambda event: event.timestamp,
    )
    return ManagementKeyReport(key, lifecycle, actions)


def _made_with(event: Event, display: str) -> bool:
    """Whether a caller presenting the management key shown as `display` made this change."""
    actor: ActorFields | None = getattr(event, "actor", None)  # events without one: None
    return actor is not None and (actor["kind"], actor["name"]) == ("management_key", display)
