"""The refusals the domain can give. Each maps to one clear message at the edges."""


class DomainError(Exception):
    """A command was refused; nothing changed."""


class InvalidAmount(DomainError, ValueError):
    """A credit amount that is negative, non-numeric or too precise."""


class InvalidName(DomainError, ValueError):
    """A key or account name outside the 1–64 printable characters rule."""


class InvalidScope(DomainError, ValueError):
    """A scope with malformed models, region or limit."""


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
