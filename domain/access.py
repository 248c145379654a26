"""May this key be used now, and may it be changed? One pure answer, for every entry point.

The key aggregate (domain.keys), the gateway's lookup record (projections.lookup), the management
API, the dashboard, the CLI, the views and the forensics all ask `key_access`; none decides it on
its own. The rules:

- a revocation ends a key at once (`revoked`), rotating or not;
- a rotation ends it at its grace deadline (`grace_ended`), with no further event;
- an expiry ends it at `expires_at` (`expired`), with no further event;
- whichever of those came first is the reason it stopped (at the same moment, the rotation);
- a usable key (`active`, or `rotating` in its grace) is refused from an address outside its
  allowlist (`ip_not_allowed`): a refusal of this request, not a state of the key.

What may be changed: a key that is active, rotating or expired may be rescoped, renamed or given
a new policy (an expired key can be given a later expiry); only a key not yet rotated may be
rotated; a key that was revoked or whose grace ended is history and cannot be changed.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from domain.policy import NO_POLICY, KeyPolicy

Reason = Literal["active", "rotating", "revoked", "grace_ended", "expired", "ip_not_allowed"]
# The KEY shape's `status` (API.md): a grace that ended reads as revoked, as it always has.
PublicStatus = Literal["active", "rotating", "revoked", "expired"]

_PUBLIC: dict[str, PublicStatus] = {
    "active": "active",
    "rotating": "rotating",
    "revoked": "revoked",
    "grace_ended": "revoked",
    "expired": "expired",
}


class NotChecked:
    def __repr__(self) -> str:
        return "NOT_CHECKED"


NOT_CHECKED = NotChecked()  # judge the key alone, not a request from some address
ClientIp = str | NotChecked | None  # the request's address; None: not known


@dataclass(frozen=True, slots=True)
class Access:
    reason: Reason
    state: Reason  # the key's own state (never ip_not_allowed)
    ended_at: datetime | None  # when it stopped working, if it has
    rotated: bool

    @property
    def usable(self) -> bool:
        return self.reason in ("active", "rotating")

    @property
    def status(self) -> PublicStatus:
        return _PUBLIC[self.state]

    @property
    def changeable(self) -> bool:
        """May its scope, name or policy change?"""
        return self.state in ("active", "rotating", "expired")

    @property
    def rotatable(self) -> bool:
        return self.changeable and not self.rotated

    @property
    def revocable(self) -> bool:
        return self.state not in ("revoked", "grace_ended")

    @property
    def ended(self) -> bool:
        """Stopped working for good or until changed (revoked, grace ended, expired)."""
        return self.state in ("revoked", "grace_ended", "expired")


def key_access(
    *,
    revoked_at: datetime | None,
    grace_deadline: datetime | None,
    policy: KeyPolicy = NO_POLICY,
    now: datetime,
    client_ip: ClientIp = NOT_CHECKED,
) -> Access:
    """The one answer to "may this key be used now (from this address)?"."""
    rotated = grace_deadline is not None
    ends: list[tuple[datetime, Reason]] = []
    if revoked_at is not None:
        ends.append((revoked_at, "revoked"))
    if grace_deadline is not None and now >= grace_deadline:
        ends.append((grace_deadline, "grace_ended"))
    if policy.expires_at is not None and now >= policy.expires_at:
        ends.append((policy.expires_at, "expired"))
    if revoked_at is not None:
        # An explicit revocation is always the reason, even after an expiry (it was decided).
        return Access("revoked", "revoked", revoked_at, rotated)
    if ends:
        ended_at, ended = min(ends, key=lambda end: end[0])
        return Access(ended, ended, ended_at, rotated)
    state: Reason = "rotating" if rotated else "active"
    if not isinstance(client_ip, NotChecked) and not policy.allows_ip(client_ip):
        return Access("ip_not_allowed", state, None, rotated)
    return Access(state, state, None, rotated)
