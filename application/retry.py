"""Retrying what may succeed if tried again: optimistic-concurrency conflicts (reload and retry a
bounded number of times) and transient store errors (a timeout, a cancelled statement, a lost
connection, a serialization failure: back off with jitter and try again)."""

import random
import time
from collections.abc import Callable
from typing import TypeVar

from eventsourcing.persistence import IntegrityError

T = TypeVar("T")

# Error classes, by name anywhere in an error's class hierarchy or its causes, that say "the
# store could not do it now", not "this can never be done". Names, so the application needs no
# driver: psycopg's OperationalError covers QueryCanceled (statement_timeout), AdminShutdown,
# SerializationFailure and DeadlockDetected (TransactionRollback) and lost connections;
# psycopg_pool's PoolTimeout, eventsourcing's and SQLAlchemy's wrappers keep the same names;
# SQLite's "database is locked" is an OperationalError too.
TRANSIENT_NAMES = frozenset(
    {"OperationalError", "InterfaceError", "PoolTimeout", "TimeoutError", "ConnectionError"}
)
PERMANENT_NAMES = frozenset(
    {"ProgrammingError", "DataError", "IntegrityError", "NotSupportedError"}
)


class TooMuchContention(RuntimeError):
    """Other writers kept winning; the command did nothing and may be tried again."""


class StoreUnavailable(RuntimeError):
    """The store did not answer in time (down, restarting, overloaded); nothing was changed.
    A client may try again shortly."""


def is_transient(error: BaseException) -> bool:
    """Whether `error` (or what caused it) is a store error that a retry may cure."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StoreUnavailable):
            return True
        names = {cls.__name__ for cls in type(current).__mro__}
        if names & PERMANENT_NAMES:
            return False
        if names & TRANSIENT_NAMES:
            return True
        current = current.__cause__ or current.__context__
    return False


def backoff(attempt: int, base: float = 0.05, cap: float = 2.0) -> float:
    """Seconds to wait before retry `attempt` (0, 1, …): exponential, capped, with full jitter
    so many retrying processes do not hit the store in step."""
    return random.uniform(0, min(cap, base * 2**attempt))


def retry_on_conflict(command: Callable[[], T], attempts: int = 20) -> T:
    for attempt in range(attempts):
        try:
            return command()
        except IntegrityError:
            time.sleep(random.uniform(0, 0.002 * (attempt + 1)))
    raise TooMuchContention("too many concurrent changes; nothing was changed, try again")


def retry_transient(command: Callable[[], T], attempts: int = 5, base: float = 0.05) -> T:
    """Run `command`, retrying a transient store error up to `attempts` times in all."""
    for attempt in range(attempts):
        try:
            return command()
        except Exception as error:
            if attempt == attempts - 1 or not is_transient(error):
                raise
            time.sleep(backoff(attempt, base))
    raise AssertionError("unreachable")
