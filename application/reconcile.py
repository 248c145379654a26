"""Crash safety: holds left open by a gateway that died mid-request are settled at the held
amount after a timeout, marked `unsettled`, so nothing reaches a provider uncharged and no money
stays held forever. Settling is idempotent, so any number of reconcilers may run."""

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import wait
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from application.keys import Lowrouter
from application.spend import SpendControl
from domain.errors import NotFound
from domain.usage import Usage

log = logging.getLogger("lowrouter.reconcile")


@dataclass(frozen=True)
class OpenHold:
    request_id: str
    account_id: UUID
    key_id: UUID
    amount: int
    reserved_at: datetime


FindStaleHolds = Callable[[datetime], Sequence[OpenHold]]


def reconcile(
    app: Lowrouter, spend: SpendControl, find_stale_holds: FindStaleHolds, timeout: timedelta
) -> int:
    """Settle every hold reserved before now - timeout. Returns how many were settled now."""
    stale = find_stale_holds(app.clock() - timeout)
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
                    status="unsettled",
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
        if future.exception() is not None:
            log.error("reconciling a hold failed: %s", future.exception())
    if settled:
        log.warning("reconciled %d open holds older than %s at their held amount", settled, timeout)
    return settled
