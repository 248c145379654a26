"""A key's policy beyond its scope: when it expires, how fast and from where it may be used, and
how much it may spend per UTC calendar month.

Expiry and the IP allowlist are judged from the key lookup at request time (domain.access); the
rate limits and the monthly limit are invariants of the account's ledger page (domain.ledger).
"""

import ipaddress
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal, TypedDict, Unpack, get_args

from domain.errors import InvalidPolicy

MAX_ALLOWED_NETWORKS = 100
MAX_RATE = 1_000_000_000  # a sanity bound for requests/tokens per minute and concurrency
MAX_EXPIRY = timedelta(days=3650)
PolicyField = Literal[
    "expires_at",
    "requests_per_minute",
    "tokens_per_minute",
    "max_concurrent",
    "allowed_ips",
    "monthly_limit",
]
POLICY_FIELDS: tuple[PolicyField, ...] = get_args(PolicyField)  # the one list, in its order
RATE_FIELDS = ("requests_per_minute", "tokens_per_minute", "max_concurrent")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class PolicyChanges(TypedDict, total=False):
    """Fields of a policy to change, from the edges: an absent one is kept, None clears it."""

    expires_at: datetime | None
    requests_per_minute: int | None
    tokens_per_minute: int | None
    max_concurrent: int | None
    allowed_ips: tuple[str, ...] | None
    monthly_limit: int | None


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    expires_at: datetime | None = None  # None: never expires
    requests_per_minute: int | None = None  # reservations in the trailing 60 s
    tokens_per_minute: int | None = None  # settled + held token estimates in the trailing 60 s
    max_concurrent: int | None = None  # open holds
    allowed_ips: tuple[str, ...] | None = None  # CIDRs, normalised; None: any address
    monthly_limit: int | None = None  # micro-credits per UTC calendar month
    _networks: tuple[Network, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.expires_at is not None and (
            not isinstance(self.expires_at, datetime) or self.expires_at.tzinfo is None
        ):
            raise InvalidPolicy("expires_at must be a time with a zone (ISO 8601, e.g. …Z)")
        for name in RATE_FIELDS:
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_RATE
            ):
                raise InvalidPolicy(f"{name} must be a whole number from 1 to {MAX_RATE}")
        if self.monthly_limit is not None and (
            not isinstance(self.monthly_limit, int)
            or isinstance(self.monthly_limit, bool)
            or self.monthly_limit < 0
        ):
            raise InvalidPolicy("the monthly limit must be a non-negative amount of credits")
        if self.allowed_ips is not None:
            networks = parse_networks(self.allowed_ips)
            object.__setattr__(self, "allowed_ips", tuple(str(n) for n in networks))
            object.__setattr__(self, "_networks", networks)

    @property
    def has_rate_limits(self) -> bool:
        return any(getattr(self, name) is not None for name in RATE_FIELDS)

    @property
    def windowed(self) -> bool:
        """Whether the ledger keeps this key's trailing-minute window (requests or tokens)."""
        return self.requests_per_minute is not None or self.tokens_per_minute is not None

    def allows_ip(self, address: str | None) -> bool:
        """Whether a client address may use the key. No allowlist: any address (even unknown)."""
        if self.allowed_ips is None:
            return True
        if not address:
            return False
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1 (a dual-stack socket's view)
        return any(ip.version == net.version and ip in net for net in self._networks)

    def as_parts(self) -> PolicyChanges:
        """Every field, for a change that sets them all (`policy.changed(**parts)`)."""
        return {
            "expires_at": self.expires_at,
            "requests_per_minute": self.requests_per_minute,
            "tokens_per_minute": self.tokens_per_minute,
            "max_concurrent": self.max_concurrent,
            "allowed_ips": self.allowed_ips,
            "monthly_limit": self.monthly_limit,
        }

    def changed(self, **changes: Unpack[PolicyChanges]) -> "KeyPolicy":
        return replace(self, **changes)

    def as_fields(self) -> dict[str, Any]:
        """The policy as event fields (lists, not tuples, so a replay compares equal)."""
        return {
            "expires_at": self.expires_at,
            "requests_per_minute": self.requests_per_minute,
            "tokens_per_minute": self.tokens_per_minute,
            "max_concurrent": self.max_concurrent,
            "allowed_ips": list(self.allowed_ips) if self.allowed_ips is not None else None,
            "monthly_limit": self.monthly_limit,
        }

    @classmethod
    def from_fields(cls, **fields: Any) -> "KeyPolicy":
        ips = fields.get("allowed_ips")
        return cls(
            expires_at=fields.get("expires_at"),
            requests_per_minute=fields.get("requests_per_minute"),
            tokens_per_minute=fields.get("tokens_per_minute"),
            max_concurrent=fields.get("max_concurrent"),
            allowed_ips=tuple(ips) if ips is not None else None,
            monthly_limit=fields.get("monthly_limit"),
        )

    def for_successor(self, old_created: datetime, at: datetime) -> "KeyPolicy":
        """What a rotation's successor gets: the same limits and networks, and, if the key
        expires, the same lifetime counted from the rotation (rotating renews a key)."""
        if self.expires_at is None:
            return self
        lifetime = max(self.expires_at - old_created, timedelta(0))
        return replace(self, expires_at=at + lifetime)


NO_POLICY = KeyPolicy()


def parse_networks(values: object) -> tuple[Network, ...]:
    """CIDRs (`10.0.0.0/8`, `2001:db8::/32`) or single addresses; host bits are masked off."""
    if isinstance(values, str) or not isinstance(values, list | tuple):
        raise InvalidPolicy("allowed_ips must be a list of CIDRs (or null for any address)")
    if not values:
        raise InvalidPolicy("allowed_ips must list at least one network (or be null for any)")
    if len(values) > MAX_ALLOWED_NETWORKS:
        raise InvalidPolicy(f"at most {MAX_ALLOWED_NETWORKS} networks in allowed_ips")
    networks: list[Network] = []
    for value in values:
        if not isinstance(value, str):
            raise InvalidPolicy("allowed_ips must be a list of CIDR strings")
        try:
            network = ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            raise InvalidPolicy(
                f"not a network: {value[:60]!r} (a CIDR such as 203.0.113.0/24 or 2001:db8::/32)"
            ) from None
        if network not in networks:
            networks.append(network)
    return tuple(networks)


_DURATION = re.compile(r"(\d{1,6})([smhdw])")
# Seconds per unit of a written duration (a key's lifetime here, a time ago on the CLI).
SECONDS_PER_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """`90d`, `12h`, `30m`, `45s`, `2w`: how long from now a key lives."""
    found = _DURATION.fullmatch(text.strip())
    if not found:
        raise InvalidPolicy(f"not a duration: {text[:20]!r} (e.g. 90d, 12h, 30m)")
    duration = timedelta(seconds=int(found.group(1)) * SECONDS_PER_UNIT[found.group(2)])
    if not timedelta(0) < duration <= MAX_EXPIRY:
        raise InvalidPolicy(f"a key lives between 1 second and {MAX_EXPIRY.days} days")
    return duration


ROTATE_AFTER = timedelta(days=90)  # the product page: rotate every 90 days


def rotation_due(created: datetime, policy: KeyPolicy, now: datetime) -> bool:
    """A key older than 90 days that will never expire on its own: flag it "rotate"."""
    return policy.expires_at is None and now - created > ROTATE_AFTER
