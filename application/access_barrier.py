"""The access barrier: a command that changes access returns only once the key lookup reflects it.

The gateway reads the active-key lookup projection, so a revoked, rescoped or new key means what
it says on every process only once the lookup has applied the command's events. The waiting
itself is a port (`Lowrouter.access_barrier`, supplied by the runtime: wait until the lookup's
position reaches a notification id); this module is the one place that decides what to wait for
and what a lagging lookup means.
"""

import logging
from collections.abc import Callable, Sequence
from uuid import UUID

from eventsourcing.persistence import Recording

AccessBarrier = Callable[[int], None]

log = logging.getLogger("lowrouter.keys")


def no_barrier(position: int) -> None:
    """No lookup to wait for (an application without projections, as in unit tests)."""
    return None


def await_access(barrier: AccessBarrier, recordings: Sequence[Recording[UUID]]) -> None:
    """Wait until the lookup reflects the last of these events; nothing recorded: no wait. A
    lookup that lags or fails raises: the change is saved but not yet enforced everywhere."""
    if recordings:
        barrier(max(r.notification.id for r in recordings))


def await_issued_access(
    barrier: AccessBarrier, recordings: Sequence[Recording[UUID]]
) -> str | None:
    """The barrier after a new inference key's token was written: its write landed, so a lagging
    lookup must not lose the token (the only moment it exists). A warning instead of an error."""
    try:
        await_access(barrier, recordings)
    except Exception as error:
        log.warning("a new key's lookup lags: %s", type(error).__name__)
        return (
            "the key was created, but the gateway's key lookup has not caught up yet "
            f"({type(error).__name__}); the key works once it has"
        )
    return None
