"""The refusals the domain can give. Each maps to one clear message at the edges."""


class DomainError(Exception):
    """A command was refused; nothing changed."""


class InvalidAmount(DomainError, ValueError):
    """A credit amount that is negative, non-numeric or too precise."""


class InvalidName(DomainError, ValueError):
    """A key or account name outside the 1–64 printable characters rule."""


class InvalidScope(DomainError, ValueError):
    """A scope with malformed models, region or limit."""


class UnknownScopePart(InvalidScope):
    """A model or region the gateway does not serve."""

    def __init__(self, field: str, code: str, message: str) -> None:
        self.field, self.code = field, code
        super().__init__(message)


class InvalidGrace(DomainError, ValueError):
    """A rotation grace below zero or above the longest (domain.rotation.MAX_GRACE)."""


class KeyRevoked(DomainError):
    """The key is revoked: it can no longer be scoped, renamed or rotated."""


class NotFound(DomainError, LookupError):
    """No such key or account (or not one the caller may see)."""


class InsufficientCredits(DomainError):
    """The account's balance minus its holds cannot cover the request's maximum cost."""

    def __init__(self, balance: int, held: int, needed: int) -> None:
        self.balance, self.held, self.needed = balance, held, needed
        super().__init__("insufficient credits")


class DailyLimitExceeded(DomainError):
    """The key's spend today plus its holds plus this request would pass its daily limit."""

    def __init__(self, spent: int, held: int, limit: int, needed: int) -> None:
        self.spent, self.held, self.limit, self.needed = spent, held, limit, needed
        super().__init__("daily limit exceeded")


class InvalidPolicy(DomainError, ValueError):
    """A key policy with a malformed expiry, rate, network or monthly limit."""


class MonthlyLimitExceeded(DomainError):
    """The key's spend this UTC month plus its holds plus this request would pass its limit."""

    def __init__(self, spent: int, held: int, limit: int, needed: int) -> None:
        self.spent, self.held, self.limit, self.needed = spent, held, limit, needed
        super().__init__("monthly limit exceeded")


class RateLimitExceeded(DomainError):
    """The key's requests or tokens in the trailing minute would pass its per-minute limit.

    `retry_after` is the seconds until enough of the window has passed, or None when no wait
    can help (one request's own token estimate is above the limit)."""

    def __init__(self, what: str, limit: int, used: int, retry_after: float | None) -> None:
        self.what, self.limit, self.used, self.retry_after = what, limit, used, retry_after
        super().__init__(f"{what} per minute exceeded")


class ConcurrencyLimitExceeded(DomainError):
    """`max_concurrent` requests of this key are already in flight."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__("concurrency limit exceeded")


class TooManyKeys(DomainError):
    """An account already has as many live (not revoked) inference keys as it may."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        super().__init__(
            f"this account has {cap} live keys, the most it may have: revoke one first"
        )
