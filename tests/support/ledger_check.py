"""The faults suite's checker: replays the raw event log (not the projections) and proves the
books after a fault — every answered request settled exactly once at its real cost, nothing
charged twice, no hold left open, every balance recomputed from the events equal to the page's,
and `lowrouter verify` (the hash chain) passing."""

import time
from collections import Counter, defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.utils import get_topic

from domain.ledger import LedgerPage
from infrastructure.runtime import Runtime

TOPICS = [
    get_topic(cls)
    for cls in (
        LedgerPage.Opened,
        LedgerPage.Funded,
        LedgerPage.Reserved,
        LedgerPage.Settled,
        LedgerPage.Released,
        LedgerPage.Adjusted,
        LedgerPage.Closed,
    )
]


@dataclass
class Books:
    """What the raw log says, per request and per account."""

    reserved: dict[str, int] = field(default_factory=dict)  # request id -> amount held
    settled: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))
    released: Counter[str] = field(default_factory=Counter)
    balances: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # recomputed
    pages: dict[str, Any] = field(default_factory=dict)  # account -> its last page's events' ids


def replay(runtime: Runtime) -> Books:
    """Every ledger event, decoded from the event table, in log order."""
    app = runtime.app
    books = Books()
    start = 1
    while True:
        notifications = app.recorder.select_notifications(start=start, limit=5000, topics=TOPICS)
        if not notifications:
            return books
        for notification in notifications:
            event = app.mapper.to_domain_event(notification)
            if isinstance(event, LedgerPage.Opened):
                books.pages[str(event.originator_id)] = str(event.account_id)
            account = books.pages.get(str(event.originator_id))
            assert account is not None, f"an event of an unknown page: {event}"
            if isinstance(event, LedgerPage.Funded | LedgerPage.Adjusted):
                books.balances[account] += event.amount
            elif isinstance(event, LedgerPage.Reserved):
                books.reserved.setdefault(event.request_id, event.amount)
            elif isinstance(event, LedgerPage.Settled):
                books.settled[event.request_id].append(event)
                books.balances[account] -= event.cost
            elif isinstance(event, LedgerPage.Released):
                books.released[event.request_id] += 1
        start = notifications[-1].id + 1


def check_books(
    runtime: Runtime,
    answered: Mapping[str, int],
    *,
    refused: Collection[str] = (),
    verify: bool = True,
    killed: bool = False,
    wait: float = 10.0,
) -> Books:
    """`answered`: request id -> the cost (micro-credits) the client was told; `refused`:
    requests refused before going upstream (nothing may be charged); `killed`: the gateway was
    killed, so an answer whose settlement had not landed yet (README, "Settling after the
    answer") may be settled by the reconciler instead, at its hold, `unsettled`. An answer's
    settlement lands just after the answer: the log is read again until each has landed (or
    `wait` seconds). Raises an AssertionError naming the first broken promise."""
    books = replay(runtime)
    deadline = time.monotonic() + wait
    while any(r not in books.settled for r in answered) and time.monotonic() < deadline:
        time.sleep(0.05)
        books = replay(runtime)
    for request_id in refused:
        charged = [e.cost for e in books.settled.get(request_id, []) if e.cost]
        assert not charged, f"{request_id} was refused, yet charged {charged}"
    for request_id, told in answered.items():
        settlements = books.settled.get(request_id, [])
        assert len(settlements) == 1, f"{request_id}: {len(settlements)} settlements"
        settled = settlements[0]
        died_before_it_landed = (
            killed and settled.status == "unsettled" and settled.cost == settled.held
        )
        assert settled.cost == told or died_before_it_landed, (
            f"{request_id}: told {told}, charged {settled.cost} ({settled.status})"
        )
        assert not books.released[request_id], f"{request_id}: answered, yet released"
    for request_id, events in books.settled.items():
        assert len(events) == 1, f"{request_id} charged {len(events)} times"
        assert not books.released[request_id], f"{request_id} settled and released"
        assert 0 <= events[0].cost <= events[0].held
    open_holds = [r for r in books.reserved if r not in books.settled and not books.released[r]]
    assert open_holds == [], f"holds still open: {open_holds[:5]}"
    for account, balance in books.balances.items():
        view = runtime.spend.view(_uuid(account)).result(30)
        assert view.balance == balance, f"account {account}: page {view.balance}, log {balance}"
        assert view.held == 0
    if verify:
        from infrastructure.chain.store import catch_up_chain
        from infrastructure.cli import main

        catch_up_chain(runtime)
        assert main(["verify", "--database-url", runtime.settings.database_url]) == 0
    return books


def _uuid(text: str) -> Any:
    from uuid import UUID

    return UUID(text)
