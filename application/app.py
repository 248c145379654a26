"""The Application: the key and account use cases, one method each, load → domain method → save.

Commands that change access (create, scope, rotate, revoke) return only once the key lookup the
gateway reads reflects their events (`application.access_barrier`; the waiting is the
`access_barrier` port, supplied by the runtime).
"""

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, Recording
from eventsourcing.utils import EnvType

from application.access_barrier import AccessBarrier, await_access, await_issued_access, no_barrier
from application.clock import Clock, system_clock, utc_day
from application.retry import retry_on_conflict
from domain.accounts import Account
from domain.actor import Actor
from domain.errors import DomainError, NotFound, TooManyKeys
from domain.keys import ApiKey
from domain.ledger import LedgerPage
from domain.policy import NO_POLICY, KeyPolicy, PolicyChanges
from domain.rotation import check_grace
from domain.scope import Scope, ScopeChanges, check_name
from domain.tokens import Token, TokenKind, generate_token, hash_token

_ACCOUNT_NAMESPACE = uuid5(NAMESPACE_URL, "https://lowrouter.dev/account")
ATTEMPT_WINDOW = timedelta(seconds=60)


def account_id_for(name: str) -> UUID:
    """Account names are unique: the id is derived from the name, so opening twice conflicts."""
    return uuid5(_ACCOUNT_NAMESPACE, name.strip().casefold())


class AccountExists(DomainError):
    pass


@dataclass(frozen=True)
class IssuedKey:
    """A key just created or rotated, with its token: the only moment the token exists."""

    key: ApiKey
    token: Token
    # Set when the key was created but the key lookup had not caught up when the command
    # returned (a projection lagging or failing): the token is still returned — the key exists
    # — and works once the lookup catches up.
    warning: str | None = None


@dataclass(frozen=True)
class OpenedAccount:
    account: Account
    management_key_id: UUID
    token: Token


class Lowrouter(Application[UUID]):
    """The event-sourced ledger of accounts, keys and credits."""

    name = "lowrouter"
    is_snapshotting_enabled = True

    def __init__(self, env: EnvType | None = None, *, pepper: bytes, clock: Clock = system_clock):
        super().__init__(env)
        self.pepper = pepper
        self.clock = clock
        self.access_barrier: AccessBarrier = no_barrier
        # The cap on an account's live inference keys (None: none) and the read model's count
        # of them (a port: the key lookup). A rotation is not counted against it.
        self.max_keys_per_account: int | None = None
        self.live_key_count: Callable[[UUID], int] = lambda account_id: 0
        self._attempts: dict[UUID, tuple[datetime | None, int]] = {}
        self._attempts_lock = threading.Lock()

    def construct_env(self, name: str, env: EnvType | None = None) -> Any:
        # Settings are read once by infrastructure.settings; never pick up stray variables here.
        from eventsourcing.utils import Environment

        settings = dict(env or {})
        settings.setdefault("IS_SNAPSHOTTING_ENABLED", "y")  # hot ledger pages are snapshotted
        return Environment(name, settings)

    # Accounts -----------------------------------------------------------------------------

    def open_account(self, name: str, actor: Actor, credits: int = 0) -> OpenedAccount:
        now = self.clock()
        check_name(name)
        account = Account.open(account_id_for(name), name, actor, now)
        token = generate_token(TokenKind.MANAGEMENT)
        mk_id = uuid4()
        account.issue_management_key(
            mk_id, hash_token(self.pepper, token), token.value[:10], token.last4, actor, now
        )
        page = LedgerPage.open(account.id, utc_day(now), now)
        if credits:
            page.fund(credits, actor, now)
        try:
            recordings = self.save(account, page)
        except IntegrityError:
            raise AccountExists(f"an account named {name!r} already exists") from None
        await_access(self.access_barrier, recordings)
        return OpenedAccount(account, mk_id, token)

    def get_account(self, account_id: UUID) -> Account:
        try:
            account: Aggregate = self.repository.get(account_id)
        except AggregateNotFoundError:
            raise NotFound(f"no account {account_id}") from None
        if not isinstance(account, Account):
            raise NotFound(f"no account {account_id}")
        return account

    def find_account(self, id_or_name: str) -> Account:
        """An account by id or by name."""
        try:
            return self.get_account(UUID(id_or_name))
        except (ValueError, NotFound):
            pass
        try:
            return self.get_account(account_id_for(id_or_name))
        except NotFound:
            raise NotFound(f"no account {id_or_name[:80]!r} (by id or name)") from None

    # Keys ---------------------------------------------------------------------------------

    def create_key(
        self,
        account_id: UUID,
        name: str,
        scope: Scope,
        actor: Actor,
        policy: KeyPolicy = NO_POLICY,
    ) -> IssuedKey:
        cap = self.max_keys_per_account
        if cap is not None and self.live_key_count(account_id) >= cap:
            raise TooManyKeys(cap)
        token = generate_token(TokenKind.INFERENCE)
        key_id = uuid4()

        def command() -> tuple[ApiKey, list[Recording[UUID]]]:
            now = self.clock()
            account = self.get_account(account_id)
            key = self._new_key(key_id, account.id, name, scope, token, actor, now, policy=policy)
            account.add_api_key(key.id, now)
            return key, self.save(key, account)

        key, recordings = retry_on_conflict(command)
        return IssuedKey(key, token, await_issued_access(self.access_barrier, recordings))

    def get_key(self, key_id: UUID, account_id: UUID | None = None) -> ApiKey:
        """A key by id; with `account_id`, a key of another account is reported as missing."""
        try:
            key: Aggregate = self.repository.get(key_id)
        except AggregateNotFoundError:
            raise NotFound(f"no key {key_id}") from None
        if not isinstance(key, ApiKey) or (account_id is not None and key.account_id != account_id):
            raise NotFound(f"no key {key_id}")
        return key

    def list_keys(
        self, account_id: UUID, offset: int = 0, limit: int | None = None
    ) -> list[ApiKey]:
        """The account's keys, oldest first; a page of them from `offset` (keys are only ever
        appended, so an offset is a cursor without gaps or repeats)."""
        account = self.get_account(account_id)
        ids = account.api_key_ids[offset : None if limit is None else offset + limit]
        return [self.get_key(key_id) for key_id in ids]

    def scope_key(
        self, key_id: UUID, scope: Scope, actor: Actor, account_id: UUID | None = None
    ) -> ApiKey:
        return self._change_key(key_id, account_id, lambda k, now: k.rescope(scope, actor, now))

    def update_key(
        self,
        key_id: UUID,
        actor: Actor,
        *,
        name: str | None = None,
        scope_changes: ScopeChanges | None = None,
        policy_changes: PolicyChanges | None = None,
        account_id: UUID | None = None,
    ) -> ApiKey:
        """Rename and/or change parts of the scope and policy in one atomic save; the parts not
        given keep their value as of the save (merged inside the retry, so concurrent edits
        don't clash). Asking for a change to a key that cannot change is refused, even when
        nothing would differ; only what differs is recorded."""

        def change(key: ApiKey, now: datetime) -> None:
            if name is not None or scope_changes or policy_changes:
                key.check_changeable(now)
            if name is not None and name != key.name:
                key.rename(name, actor, now)
            if scope_changes:
                scope = replace(key.scope, **scope_changes)
                if scope != key.scope:
                    key.rescope(scope, actor, now)
            if policy_changes:
                policy = key.policy.changed(**policy_changes)
                if policy != key.policy:
                    key.change_policy(policy, actor, now)

        return self._change_key(key_id, account_id, change)

    def rename_key(
        self, key_id: UUID, name: str, actor: Actor, account_id: UUID | None = None
    ) -> ApiKey:
        return self._change_key(key_id, account_id, lambda k, now: k.rename(name, actor, now))

    def revoke_key(
        self, key_id: UUID, actor: Actor, reason: str = "revoked", account_id: UUID | None = None
    ) -> ApiKey:
        return self._change_key(key_id, account_id, lambda k, now: k.revoke(reason, actor, now))

    def record_use_after_revocation(
        self, key_id: UUID, client_ip: str | None, user_agent: str | None
    ) -> None:
        """Note an attempt to use a revoked key, for the security team. Bursts fold into at most
        one event per key per minute (with a count), so a flood cannot flood the store."""
        now = self.clock()
        with self._attempts_lock:
            recorded_at, pending = self._attempts.get(key_id, (None, 0))
            pending += 1
            if recorded_at is not None and now - recorded_at < ATTEMPT_WINDOW:
                self._attempts[key_id] = (recorded_at, pending)
                return
            self._attempts[key_id] = (now, 0)

        def command() -> None:
            key = self.get_key(key_id)
            key.record_use_after_revocation(pending, client_ip, user_agent, self.clock())
            self.save(key)

        retry_on_conflict(command)

    def rotate_key(
        self,
        key_id: UUID,
        actor: Actor,
        grace: timedelta = timedelta(0),
        account_id: UUID | None = None,
    ) -> IssuedKey:
        """Create a successor with the same name, scope and policy (an expiry renewed for the
        same lifetime); the old key works until grace ends."""
        check_grace(grace)
        token = generate_token(TokenKind.INFERENCE)

        def command() -> tuple[ApiKey, list[Recording[UUID]]]:
            now = self.clock()
            old = self.get_key(key_id, account_id)
            account = self.get_account(old.account_id)
            successor = self._new_key(
                uuid4(),
                old.account_id,
                old.name,
                old.scope,
                token,
                actor,
                now,
                predecessor_id=old.id,
                policy=old.policy.for_successor(old.created_on, now),
            )
            old.rotate(successor.id, now + grace, actor, now)
            account.add_api_key(successor.id, now)
            return successor, self.save(old, successor, account)

        successor, recordings = retry_on_conflict(command)
        return IssuedKey(successor, token, await_issued_access(self.access_barrier, recordings))

    # Helpers ------------------------------------------------------------------------------

    def _new_key(
        self,
        key_id: UUID,
        account_id: UUID,
        name: str,
        scope: Scope,
        token: Token,
        actor: Actor,
        now: datetime,
        predecessor_id: UUID | None = None,
        policy: KeyPolicy = NO_POLICY,
    ) -> ApiKey:
        return ApiKey.create(
            key_id=key_id,
            account_id=account_id,
            name=name,
            token_hash=hash_token(self.pepper, token),
            prefix=token.value[:10],
            last4=token.last4,
            scope=scope,
            actor=actor,
            at=now,
            predecessor_id=predecessor_id,
            policy=policy,
        )

    def _change_key(
        self,
        key_id: UUID,
        account_id: UUID | None,
        change: Callable[[ApiKey, datetime], None],
    ) -> ApiKey:
        def command() -> tuple[ApiKey, list[Recording[UUID]]]:
            key = self.get_key(key_id, account_id)
            change(key, self.clock())
            return key, self.save(key)

        key, recordings = retry_on_conflict(command)
        await_access(self.access_barrier, recordings)
        return key
