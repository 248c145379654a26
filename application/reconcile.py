"""Crash safety: holds left open by a gateway that died mid-request are settled at the held
amount, marked `unsettled`, so nothing reaches a provider uncharged and no money stays held
forever. Settling is idempotent, so any number of reconcilers may run.

A hold belongs to the process serving its request (its `owner`, a liveness lease). The
reconciler settles a hold older than the hold timeout only once its owner is gone: a live
gateway's long request (a slow stream, a settlement waiting out a database outage) is never
charged at its hold behind its back. The one exception, `backstop`: a hold older than any
request may live (the request deadline plus the hold timeout) is settled even if its owner
still renews its lease, so a hold a live process lost track of is not held forever."""

import logging
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import wait
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from application.app import Lowrouter
from application.spend import SpendControl
from domain.errors import NotFound
from domain.ledger import UNSETTLED
from domain.redaction import safe_error_text
from domain.usage import Usage

log = logging.getLogger("lowrouter.reconcile")


@dataclass(frozen=True)
class OpenHold:
    request_id: str
    account_id: UUID
    key_id: UUID
    amount: int
    reserved_at: datetime
    owner: str | None = None  # the process serving it (None: reserved before leases existed)


FindStaleHolds = Callable[[datetime], Sequence[OpenHold]]
LiveOwners = Callable[[Collection[str]], set[str]]  # which of these processes are alive


def ownerless(
    stale: Sequence[OpenHold], live_owners: LiveOwners, now: datetime, backstop: timedelta | None
) -> list[OpenHold]:
    """The stale holds nobody alive is still serving (or older than the backstop)."""
    live = live_owners({hold.owner for hold in stale if hold.owner is not None})
    return [
        hold
        for hold in stale
        if hold.owner not in live or (backstop is not None and hold.reserved_at < now - backstop)
    ]


def reconcile(
    app: Lowrouter,
    spend: SpendControl,
    find_stale_holds: FindStaleHolds,
    timeout: timedelta,
    live_owners: LiveOwners = lambda owners: set(),
    backstop: timedelta | None = None,
) -> int:
    """Settle every hold reserved before now - timeout whose owner is gone (see the module).
    Returns how many were settled now."""
    now = app.clock()
    stale = ownerless(find_stale_holds(now - timeout), live_owners, now, backstop)
    futures = []
    for hold in stale:
        try:
            key_name = app.get_key(hold.key_id).name
        except NotFound:
            key_name = "(unknown key)"
        futures.append(
            spend.settle(
                hold.account_id,
                hold.request_id,
                hold.amount,
                Usage(
                    key_name=key_name,
                    model="(unknown: the gateway stopped before settling)",
                    provider=None,
                    region=None,
                    prompt_tokens=0,
                    completion_tokens=0,
                    status=UNSETTLED,
                    status_code=0,
                    latency_ms=int((app.clock() - hold.reserved_at).total_seconds() * 1000),
                    streamed=False,
                    client_ip=None,
                    user_agent=None,
                    cost_source="estimated",  # the held amount: an upper bound
                    flags=["unsettled"],
                ),
            )
        )
    wait(futures)
    settled = sum(1 for f in futures if f.exception() is None and f.result() is not None)
    for future in futures:
        error = future.exception()
        if error is not None:  # the safe text: a driver error's parameters may hold hashes
            log.error("reconciling a hold failed: %s", safe_error_text(error))
    if settled:
        log.warning("reconciled %d open holds older than %s at their held amount", settled, timeout)
    return settled
