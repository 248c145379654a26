"""The ApiKey aggregate: one short stream per inference key (created, scoped, policy changed,
renamed, rotated, revoked). The token itself never appears here: only its keyed hash, its prefix
and last four. Whether the key may be used or changed is decided by domain.access."""

from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.access import NOT_CHECKED, Access, ClientIp, PublicStatus, key_access
from domain.actor import Actor, ActorFields
from domain.errors import DomainError, KeyRevoked
from domain.flags import check_flag
from domain.policy import NO_POLICY, KeyPolicy
from domain.scope import Scope, check_name

KeyStatus = PublicStatus


class ApiKey(Aggregate):
    class Created(Aggregate.Created):
        account_id: UUID
        name: str
        token_hash: str
        prefix: str
        last4: str
        models: list[str] | None
        region: str | None
        daily_limit: int | None
        predecessor_id: UUID | None
        actor: ActorFields

    class Scoped(Aggregate.Event):
        models: list[str] | None
        region: str | None
        daily_limit: int | None
        actor: ActorFields

        def apply(self, key: "ApiKey") -> None:
            key.scope = Scope.from_fields(self.models, self.region, self.daily_limit)

    class PolicyChanged(Aggregate.Event):
        """The key's expiry, rate limits, allowed networks and monthly limit, as a whole (a new
        event rather than new fields on Scoped, so events stored before 0.3 replay unchanged)."""

        expires_at: datetime | None
        requests_per_minute: int | None
        tokens_per_minute: int | None
        max_concurrent: int | None
        allowed_ips: list[str] | None
        monthly_limit: int | None
        actor: ActorFields

        def apply(self, key: "ApiKey") -> None:
            key.policy = KeyPolicy.from_fields(**vars(self))

    class Renamed(Aggregate.Event):
        name: str
        actor: ActorFields

        def apply(self, key: "ApiKey") -> None:
            key.name = self.name

    class Rotated(Aggregate.Event):
        successor_id: UUID
        grace_deadline: datetime
        actor: ActorFields

        def apply(self, key: "ApiKey") -> None:
            key.successor_id = self.successor_id
            key.grace_deadline = self.grace_deadline

    class Revoked(Aggregate.Event):
        reason: str
        actor: ActorFields

        def apply(self, key: "ApiKey") -> None:
            key.revoked_at = self.timestamp
            key.revoke_reason = self.reason

    class UsedAfterRevocation(Aggregate.Event):
        """Someone tried the token after it stopped working (refused, never charged).
        `count` folds a burst of attempts into one fact; the address is the latest one seen."""

        count: int
        client_ip: str | None
        user_agent: str | None

        def apply(self, key: "ApiKey") -> None:
            key.attempts_after_revocation += self.count

    class FlagAcknowledged(Aggregate.Event):
        """The owner looked at an unexpected-usage flag of this key and accepted it."""

        kind: str
        subject: str
        actor: ActorFields

        def apply(self, key: "ApiKey") -> None:
            key.acknowledged_flags.add((self.kind, self.subject))

    def __init__(
        self,
        account_id: UUID,
        name: str,
        token_hash: str,
        prefix: str,
        last4: str,
        models: list[str] | None,
        region: str | None,
        daily_limit: int | None,
        predecessor_id: UUID | None,
        actor: ActorFields,
    ) -> None:
        self.account_id = account_id
        self.name = name
        self.token_hash = token_hash
        self.prefix = prefix
        self.last4 = last4
        self.scope = Scope.from_fields(models, region, daily_limit)
        self.policy = NO_POLICY
        self.predecessor_id = predecessor_id
        self.successor_id: UUID | None = None
        self.grace_deadline: datetime | None = None
        self.revoked_at: datetime | None = None
        self.revoke_reason: str | None = None
        self.attempts_after_revocation = 0
        self.acknowledged_flags: set[tuple[str, str]] = set()

    @classmethod
    def create(
        cls,
        *,
        key_id: UUID,
        account_id: UUID,
        name: str,
        token_hash: str,
        prefix: str,
        last4: str,
        scope: Scope,
        actor: Actor,
        at: datetime,
        predecessor_id: UUID | None = None,
        policy: KeyPolicy = NO_POLICY,
    ) -> "ApiKey":
        key = cls._create(
            cls.Created,
            id=key_id,
            account_id=account_id,
            name=check_name(name),
            token_hash=token_hash,
            prefix=prefix,
            last4=last4,
            predecessor_id=predecessor_id,
            actor=actor.as_dict(),
            timestamp=at,
            **scope.as_fields(),
        )
        if policy != NO_POLICY:
            key.trigger_event(
                cls.PolicyChanged, actor=actor.as_dict(), timestamp=at, **policy.as_fields()
            )
        return key

    @property
    def display(self) -> str:
        return f"{self.prefix}…{self.last4}"

    def access_at(self, now: datetime, client_ip: ClientIp = NOT_CHECKED) -> Access:
        return key_access(
            revoked_at=self.revoked_at,
            grace_deadline=self.grace_deadline,
            policy=self.policy,
            now=now,
            client_ip=client_ip,
        )

    def status_at(self, now: datetime) -> KeyStatus:
        """The KEY shape's status; rotation and expiry end a key without another event."""
        return self.access_at(now).status

    def check_changeable(self, at: datetime) -> None:
        access = self.access_at(at)
        if access.changeable:
            return
        if access.state == "revoked":
            raise KeyRevoked(f"key {self.display} is revoked and cannot be changed")
        raise KeyRevoked(
            f"key {self.display} was rotated and its grace period has ended; "
            "change its successor instead"
        )

    def rescope(self, scope: Scope, actor: Actor, at: datetime) -> None:
        self.check_changeable(at)
        self.trigger_event(self.Scoped, actor=actor.as_dict(), timestamp=at, **scope.as_fields())

    def change_policy(self, policy: KeyPolicy, actor: Actor, at: datetime) -> None:
        self.check_changeable(at)
        self.trigger_event(
            self.PolicyChanged, actor=actor.as_dict(), timestamp=at, **policy.as_fields()
        )

    def rename(self, name: str, actor: Actor, at: datetime) -> None:
        self.check_changeable(at)
        self.trigger_event(self.Renamed, name=check_name(name), actor=actor.as_dict(), timestamp=at)

    def rotate(
        self, successor_id: UUID, grace_deadline: datetime, actor: Actor, at: datetime
    ) -> None:
        self.check_changeable(at)
        if self.successor_id is not None:
            raise DomainError(f"key {self.display} was already rotated; rotate its successor")
        self.trigger_event(
            self.Rotated,
            successor_id=successor_id,
            grace_deadline=max(grace_deadline, at),
            actor=actor.as_dict(),
            timestamp=at,
        )

    def record_use_after_revocation(
        self, count: int, client_ip: str | None, user_agent: str | None, at: datetime
    ) -> None:
        if not self.access_at(at).ended:
            raise DomainError(f"key {self.display} still works; this is not an attempt after it")
        self.trigger_event(
            self.UsedAfterRevocation,
            count=count,
            client_ip=client_ip,
            user_agent=(user_agent or "")[:300] or None,
            timestamp=at,
        )

    def acknowledge_flag(self, kind: str, subject: str, actor: Actor, at: datetime) -> bool:
        """Accept a flag (a revoked key's too: it is book-keeping, not access). Acknowledging
        one twice records nothing more; returns whether this call recorded it."""
        kind, subject = check_flag(kind, subject)
        if (kind, subject) in self.acknowledged_flags:
            return False
        self.trigger_event(
            self.FlagAcknowledged, kind=kind, subject=subject, actor=actor.as_dict(), timestamp=at
        )
        return True

    def revoke(self, reason: str, actor: Actor, at: datetime) -> None:
        if not self.access_at(at).revocable:
            raise KeyRevoked(f"key {self.display} is already revoked")
        self.trigger_event(self.Revoked, reason=reason[:200], actor=actor.as_dict(), timestamp=at)
