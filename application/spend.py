"""Spend control: reservations, settlements and funding on the account's ledger pages, with
group commit.

One writer thread owns a cache of each account's current page. Commands from any thread queue up;
the writer takes everything queued, applies it to working copies of the pages (domain checks refuse
single commands without failing the others), saves all changed pages in ONE transaction, and only
then answers each command. Concurrent requests therefore share one database round trip, and no
request is answered before its events are durable.

A batch is first tried optimistically: applied to the cached pages and saved, with no lock and no
read. The store refuses a save whose page version another process already used (optimistic
concurrency), so a stale cache can never overspend; it only costs a retry. After such a conflict,
and for any refusal or read (which must be judged on fresh figures), an injected page lock (a
PostgreSQL advisory lock per account, or a file lock beside a SQLite database) is held around
"fast-forward the cached pages → apply → save", so gateways writing one account take turns
instead of conflicting; an account that conflicted stays on that path for a while.
"""

import copy
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate, Snapshot
from eventsourcing.persistence import IntegrityError

from application.app import Lowrouter
from application.batching import BatchWorker
from application.clock import utc_day
from application.events import stored_events
from application.retry import StoreUnavailable, TooMuchContention, backoff, is_transient
from domain.actor import Actor
from domain.errors import DomainError, NotFound
from domain.ledger import Admission, LedgerPage, page_id
from domain.policy import NO_POLICY, KeyPolicy
from domain.redaction import safe_error_text
from domain.usage import Usage

log = logging.getLogger("lowrouter.spend")

MAX_BATCH = 512
MAX_ATTEMPTS = 25
SNAPSHOT_EVERY = 500  # events; a snapshot keeps reloading a hot page fast
REFUSAL_WINDOW = timedelta(seconds=60)  # at most one Refused fact per key and reason per window
PAGE_CACHE_SIZE = 10_000
# After a conflict, an account's batches take turns under the page lock for this long: another
# process is writing it too.
CONTENDED_SECONDS = 10.0
_ANSWERED, _CONFLICT, _REFUSED = object(), object(), object()


@dataclass(frozen=True)
class PageView:
    """What an account's current page says, for /key and /credits."""

    day: str
    balance: int
    held: int
    # by meter (the key's rotation lineage): today's and this month's settled spend and holds
    day_spent: dict[str, int] = field(default_factory=dict)
    day_held: dict[str, int] = field(default_factory=dict)
    spent_month: dict[str, int] = field(default_factory=dict)
    held_month: dict[str, int] = field(default_factory=dict)
    # by meter: (requests, tokens) in the trailing minute, for keys with a per-minute limit
    minute: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def available(self) -> int:
        return self.balance - self.held

    @property
    def spent_today(self) -> int:
        """The account's settled spend charged to today, all keys."""
        return sum(self.day_spent.values())

    def limits_of(self, meter: str) -> "LimitFigures":
        """What a key's limits are checked against: its meter's (its rotation lineage's)
        figures, so a successor shows the spend its predecessor left it."""
        return LimitFigures(
            self.day_spent.get(meter, 0),
            self.day_held.get(meter, 0),
            self.spent_month.get(meter, 0),
            self.held_month.get(meter, 0),
        )


@dataclass(frozen=True)
class LimitFigures:
    """One meter's figures on the current page (micro-credits)."""

    spent_today: int
    held_today: int
    spent_month: int
    held_month: int

    @property
    def committed_today(self) -> int:
        """Settled plus held: what the daily limit is checked against."""
        return self.spent_today + self.held_today

    @property
    def committed_month(self) -> int:
        return self.spent_month + self.held_month

    def remaining_today(self, daily_limit: int | None) -> int | None:
        return None if daily_limit is None else max(0, daily_limit - self.committed_today)


@dataclass
class _Command:
    account_id: UUID
    apply: Callable[[LedgerPage, datetime], Any]
    future: "Future[Any]" = field(default_factory=Future)
    read_only: bool = False
    # Settlements and releases: once a request was answered its settlement must land, so a
    # transient store error keeps it queued (in order) and retries it; other commands fail at
    # once with StoreUnavailable (the request is refused, nothing changed).
    durable: bool = False


@dataclass
class _RefusalCounter:
    recorded_at: datetime | None = None
    pending: int = 0


PageLock = Callable[[Sequence[UUID]], AbstractContextManager[object]]


class CommitObserver(Protocol):
    """Told of every batch saved (e.g. metrics, injected from infrastructure)."""

    def committed(self, seconds: float, commands: int) -> None: ...

    def conflicted(self, locked: bool) -> None:
        """A save was refused: another process had written one of the batch's pages (`locked`:
        it happened under the page lock, after a fast-forward)."""

    def took_turns(self) -> None:
        """A batch took the page-locked path (a conflict before, a read, or a contended page)."""


def no_lock(_accounts: Sequence[UUID]) -> AbstractContextManager[object]:
    return nullcontext()


class SpendControl:
    """The hot-path ledger: reserve before going upstream, settle or release after."""

    def __init__(
        self,
        app: Lowrouter,
        page_lock: PageLock = no_lock,
        observer: CommitObserver | None = None,
    ) -> None:
        self.app = app
        self._page_lock = page_lock
        self._observer = observer
        # This process's liveness lease (see application.reconcile): recorded on every hold, so
        # the reconciler leaves a live process's holds alone. None: no lease (a CLI).
        self.owner: str | None = None
        self._writer = BatchWorker("lowrouter-ledger-writer", self._commit, MAX_BATCH)
        self._pages: OrderedDict[UUID, LedgerPage] = OrderedDict()  # committed current pages
        self._snapshot_versions: dict[UUID, int] = {}
        self._contended: dict[UUID, float] = {}  # account -> until when to lock (monotonic)
        self._refusals: dict[tuple[str, str], _RefusalCounter] = {}
        self._refusals_lock = threading.Lock()
        self.batches = 0  # for the benchmark: commands per transaction = commands / batches
        self.commands = 0
        self.conflicts = 0
        self._retrying = 0

    # Commands (thread-safe; each returns a Future resolved once durable) -------------------

    def reserve(
        self,
        account_id: UUID,
        request_id: str,
        key_id: UUID,
        model: str,
        amount: int,
        daily_limit: int | None,
    ) -> "Future[str]":
        """Hold `amount`; resolves to the day the hold is charged to, or raises the refusal."""

        def apply(page: LedgerPage, now: datetime) -> str:
            page.reserve(request_id, str(key_id), model, amount, daily_limit, now, owner=self.owner)
            return page.holds[request_id]["day"]  # a retried, carried hold keeps its day

        return self._submit(account_id, apply)

    def admit(
        self,
        account_id: UUID,
        request_id: str,
        key_id: UUID,
        model: str,
        amount: int,
        daily_limit: int | None,
        *,
        policy: KeyPolicy = NO_POLICY,
        tokens: int = 0,
        meter: str | None = None,
    ) -> "Future[Admission]":
        """`reserve` under the key's whole policy (monthly limit, requests and tokens per minute,
        concurrency), in the same page step; resolves to the day and the key's trailing minute
        (for the x-ratelimit-* headers), or raises the refusal."""
        meter_id = meter or str(key_id)

        def apply(page: LedgerPage, now: datetime) -> Admission:
            page.reserve(
                request_id,
                str(key_id),
                model,
                amount,
                daily_limit,
                now,
                policy=policy,
                tokens=tokens,
                meter=meter_id,
                owner=self.owner,
            )
            day = page.holds[request_id]["day"]
            return Admission(day, page.rate_status(meter_id, policy, now))

        return self._submit(account_id, apply)

    def settle(
        self, account_id: UUID, request_id: str, cost: int, usage: Usage
    ) -> "Future[int | None]":
        """Charge the hold its real cost (capped at the hold). None if it was already closed
        before this settlement was first tried.

        A retried settlement (the store failed, or the connection dropped after the commit but
        before its acknowledgement) may find its hold closed by its own earlier try: then what
        that try recorded for this request id is its answer, so the client, the usage row and
        the metrics say what the ledger charged."""
        tried: list[tuple[UUID, int]] = []  # (page, version) each try was applied to

        def apply(page: LedgerPage, now: datetime) -> int | None:
            if request_id not in page.holds and tried:
                return self._settled_by_earlier_try(request_id, tried)
            tried.append((page.id, page.version))
            return page.settle(request_id, cost, now, usage)

        return self._submit(account_id, apply, durable=True)

    def _settled_by_earlier_try(self, request_id: str, tried: list[tuple[UUID, int]]) -> int | None:
        """What this request's Settled event, if one of its earlier tries landed, charged."""
        for tried_page, version in dict.fromkeys(tried):
            for event in stored_events(self.app, tried_page, gt=version):
                if isinstance(event, LedgerPage.Settled) and event.request_id == request_id:
                    return event.cost
        return None

    def reconciled_cost(self, account_id: UUID, request_id: str) -> "Future[int | None]":
        """What the reconciler charged this request's hold (on the current page), if it did:
        what a settlement that came too late reports."""
        return self._submit(
            account_id, lambda page, now: page.reconciled_cost(request_id), read_only=True
        )

    def release(self, account_id: UUID, request_id: str, reason: str) -> "Future[bool]":
        return self._submit(
            account_id, lambda page, now: page.release(request_id, reason, now), durable=True
        )

    @property
    def retrying(self) -> int:
        """Settlements and releases waiting for the store to come back."""
        return self._retrying

    def fund(self, account_id: UUID, amount: int, actor: Actor) -> "Future[None]":
        return self._submit(account_id, lambda page, now: page.fund(amount, actor, now))

    def adjust(
        self, account_id: UUID, amount: int, reason: str, actor: Actor, key_id: UUID | None = None
    ) -> "Future[None]":
        key = str(key_id) if key_id else None
        return self._submit(
            account_id, lambda page, now: page.adjust(amount, reason, actor, now, key)
        )

    def view(self, account_id: UUID) -> "Future[PageView]":
        """The account's current figures, brought up to date with other processes' writes."""

        def read(page: LedgerPage, now: datetime) -> PageView:
            return PageView(
                page.day,
                page.balance,
                page.total_held,
                day_spent=dict(page.day_spent),
                day_held=dict(page.day_held),
                spent_month=dict(page.spent_month),
                held_month=dict(page.held_month),
                minute={meter: page.window(meter, now) for meter in page.windows},
            )

        return self._submit(account_id, read, read_only=True)

    def record_refusal(self, account_id: UUID, key_id: UUID, reason: str) -> None:
        """Note a refused request. Bursts fold into one Refused fact per key, reason and minute."""
        now = self.app.clock()
        with self._refusals_lock:
            counter = self._refusals.setdefault((str(key_id), reason), _RefusalCounter())
            counter.pending += 1
            if counter.recorded_at is not None and now - counter.recorded_at < REFUSAL_WINDOW:
                return
            count, counter.pending, counter.recorded_at = counter.pending, 0, now
        self._submit(
            account_id,
            lambda page, at: page.record_refusal(str(key_id), reason, count, at),
        )

    # The writer ---------------------------------------------------------------------------

    def _submit(
        self,
        account_id: UUID,
        apply: Callable[[LedgerPage, datetime], Any],
        read_only: bool = False,
        durable: bool = False,
    ) -> "Future[Any]":
        command = _Command(account_id, apply, read_only=read_only, durable=durable)
        self._writer.submit(command)
        return command.future

    def close(self) -> None:
        self._writer.close()

    def _commit(self, batch: list[_Command]) -> None:
        """Commit the batch; across a transient store error (an outage, a timeout) or too much
        contention, keep its settlements and releases and try them again with backoff — in
        order, ahead of what was queued since — while every other command fails at once with
        StoreUnavailable (or TooMuchContention: only a reserve is ever refused). What is
        kept grows with the outage, not with the requests in flight: one settlement per request
        answered during it, and one release per hold the writer attempted and could not
        confirm (a hold that timed out while still queued is cancelled instead). Contention is
        one account's: while its settlements wait, other accounts' commands go ahead apart."""
        attempt = 0
        while True:
            try:
                self._commit_once(batch)
                self._retrying = 0
                return
            except Exception as error:
                if not _retryable(error):
                    # `batch` may hold settlements taken since the first try, which the
                    # worker's own failure handling does not know of: fail them all here.
                    self._retrying = 0
                    _fail_undone(batch, error)
                    raise
                kept = _keep_durable(batch, error)
                self._retrying = len(kept)
                if not kept:
                    return
                contended = isinstance(error, TooMuchContention)
                if attempt == 0:
                    log.warning(
                        "other writers kept winning (%s); retrying %d settlements"
                        if contended
                        else "the store failed (%s); retrying %d settlements until it answers",
                        type(error).__name__,
                        len(kept),
                    )
                time.sleep(backoff(attempt, cap=1.0))
                attempt += 1
                queued = self._writer.take_queued(MAX_BATCH)
                if contended:  # the accounts waiting keep their order; the others go ahead
                    waiting = {command.account_id for command in kept}
                    kept += self._commit_apart([c for c in queued if c.account_id not in waiting])
                    queued = [c for c in queued if c.account_id in waiting]
                batch = kept + queued

    def _commit_apart(self, batch: list[_Command]) -> list[_Command]:
        """One try of other accounts' commands while a contended batch waits; returns the
        settlements and releases it must keep for the retry."""
        if not batch:
            return []
        try:
            self._commit_once(batch)
            return []
        except Exception as error:
            if not _retryable(error):
                log.error("the ledger writer failed a batch: %s", safe_error_text(error))
                _fail_undone(batch, error)
                return []
            return _keep_durable(batch, error)

    def _commit_once(self, batch: list[_Command]) -> None:
        """Optimistically first: an account no other process is writing is applied from the
        cache and saved without the page lock or a fast-forward (the store's version check
        still refuses a stale write). A refusal is judged again on fresh figures (another
        process may have added credits), still without the lock. A conflict, or a read, takes
        the locked path; the accounts found written by another process take turns for a while."""
        accounts = sorted({c.account_id for c in batch})
        if self._may_go_optimistic(batch, accounts):
            outcome = self._attempt(batch, fast_forward=False)
            if outcome is _REFUSED:
                outcome = self._attempt(batch, fast_forward=True)
            if outcome is _ANSWERED:
                return
        if self._observer is not None:
            self._observer.took_turns()
        with self._page_lock(accounts):
            moved = self._commit_locked(batch, accounts)
        until = time.monotonic() + CONTENDED_SECONDS
        self._contended.update(dict.fromkeys(moved, until))
        if not all(command.future.done() for command in batch):
            raise TooMuchContention("other writers kept winning; settlements kept for a retry")

    def _may_go_optimistic(self, batch: list[_Command], accounts: list[UUID]) -> bool:
        if any(command.read_only for command in batch):
            return False
        now = time.monotonic()
        for account_id in accounts:
            until = self._contended.get(account_id)
            if until is not None:
                if until > now:
                    return False
                del self._contended[account_id]
        return True

    def _commit_locked(self, batch: list[_Command], accounts: list[UUID]) -> set[UUID]:
        """Returns the accounts another process had written since we last saw them."""
        moved: set[UUID] = set()
        for attempt in range(MAX_ATTEMPTS):
            moved |= self._fast_forward(accounts)
            if self._attempt(batch, fast_forward=False, fresh=True) is _ANSWERED:
                return moved
            # Another process wrote one of these pages: catch up and apply again.
            time.sleep(0.001 * attempt)
        # Only what may be refused is: a settlement or a release (an answered or abandoned
        # request) stays unanswered, and _commit tries it again (settling is idempotent).
        error = TooMuchContention("the ledger is busy; nothing was changed, try again")
        for command in batch:
            if not command.durable:
                command.future.set_exception(error)
        return moved

    def _attempt(self, batch: list[_Command], fast_forward: bool, fresh: bool = False) -> object:
        """Apply the batch to working copies of its pages and save them in one transaction.
        Answers every command and returns _ANSWERED; or answers none and returns _CONFLICT
        (a page changed under us) or _REFUSED (a command was refused on cached figures that
        were not just brought up to date: `fast_forward` does it here, `fresh` says the caller
        did)."""
        if fast_forward:
            self._fast_forward(sorted({c.account_id for c in batch}))
            fresh = True
        now = self.app.clock()
        today = utc_day(now)
        working: dict[UUID, list[LedgerPage]] = {}
        outcomes: list[tuple[bool, Any]] = []
        for command in batch:
            try:
                pages = working.get(command.account_id)
                if pages is None:
                    pages = working[command.account_id] = self._working_pages(
                        command.account_id, today, now
                    )
                outcomes.append((True, command.apply(pages[-1], now)))
            except DomainError as refusal:
                if not fresh:
                    return _REFUSED
                outcomes.append((False, refusal))
        changed = [p for pages in working.values() for p in pages if p.pending_events]
        if all(command.read_only for command in batch):
            # Reads never write: a read on a new day sees the rolled-over figures, but the
            # books are closed by the next write, not by someone looking at them.
            changed = []
        saving = time.perf_counter()
        try:
            if changed:
                self.app.save(*changed)
        except IntegrityError:
            self.conflicts += 1
            if self._observer is not None:
                self._observer.conflicted(fresh)
            return _CONFLICT
        except BaseException:
            for account_id in working:
                self._pages.pop(account_id, None)
            raise
        for account_id, pages in working.items():
            if not any(page.pending_events for page in pages):  # only what is stored
                self._remember(account_id, pages[-1])
        self.batches += 1
        self.commands += len(batch)
        saved = time.perf_counter() - saving
        for command, (ok, value) in zip(batch, outcomes, strict=True):
            if ok:
                command.future.set_result(value)
            else:
                command.future.set_exception(value)
        if changed and self._observer is not None:
            self._observe(saved, len(batch))
        self._take_snapshots(working)
        return _ANSWERED

    def _observe(self, seconds: float, commands: int) -> None:
        try:
            assert self._observer is not None
            self._observer.committed(seconds, commands)
        except Exception:  # observing must never fail the ledger
            log.exception("the commit observer failed")

    def _fast_forward(self, accounts: list[UUID]) -> set[UUID]:
        """Apply what other processes appended to our cached pages since we last saw them.
        Returns the accounts that had moved."""
        moved = set()
        for account_id in accounts:
            page = self._pages.get(account_id)
            if page is None:
                continue
            for event in stored_events(self.app, page.id, gt=page.version):
                event.mutate(page)
                moved.add(account_id)
            if page.closed:  # another process rolled this account over to a new page
                del self._pages[account_id]
        return moved

    def _working_pages(self, account_id: UUID, today: date, now: datetime) -> list[LedgerPage]:
        """A working copy of the account's current page, rolled over to today if needed."""
        page = self._pages.get(account_id)
        if page is None:
            page = self._load_current_page(account_id, today)
        page = copy.deepcopy(page)
        if page.day < today.isoformat():
            return [page, page.close_and_open(today, now)]
        return [page]

    def _load_current_page(self, account_id: UUID, today: date) -> LedgerPage:
        """Today's page, or the latest earlier one (walking back to the account's opening)."""
        try:
            opened = self.app.get_account(account_id).created_on
        except NotFound:
            raise NotFound(f"no account {account_id}") from None
        day = today
        while day >= utc_day(opened) - timedelta(days=1):
            try:
                page: Aggregate = self.app.repository.get(page_id(account_id, day))
            except AggregateNotFoundError:
                day -= timedelta(days=1)
                continue
            assert isinstance(page, LedgerPage)
            return self._latest_from(page)
        # An account opened before pages existed has none yet: start one with nothing in it.
        return LedgerPage.open(account_id, today, self.app.clock())

    def _latest_from(self, page: LedgerPage) -> LedgerPage:
        """The account's open page, starting from `page`: a host whose clock is behind another's
        around midnight finds its "today" already closed by that host, and writes on the page
        the closing opened (the next day's), instead of being refused until its midnight."""
        while page.closed:
            following: Aggregate = self.app.repository.get(
                page_id(page.account_id, date.fromisoformat(page.day) + timedelta(days=1))
            )
            assert isinstance(following, LedgerPage)
            page = following
        return page

    def _remember(self, account_id: UUID, page: LedgerPage) -> None:
        self._pages[account_id] = page
        self._pages.move_to_end(account_id)
        while len(self._pages) > PAGE_CACHE_SIZE:
            self._pages.popitem(last=False)

    def _take_snapshots(self, working: dict[UUID, list[LedgerPage]]) -> None:
        """Snapshot hot pages from memory, after answering, so a reload stays fast."""
        snapshots = self.app.snapshots
        if snapshots is None:
            return
        for pages in working.values():
            page = pages[-1]
            last = self._snapshot_versions.get(page.id, 0)
            if page.version - last >= SNAPSHOT_EVERY:
                try:
                    snapshots.put([Snapshot.take(page)])
                    self._snapshot_versions[page.id] = page.version
                except Exception:  # a snapshot is an optimisation; never fail the ledger for it
                    log.exception("snapshot of page %s failed", page.id)


def _retryable(error: BaseException) -> bool:
    """Kept settlements are tried again across these: an outage, or other writers winning."""
    return isinstance(error, TooMuchContention) or is_transient(error)


def _fail_undone(batch: list[_Command], error: BaseException) -> None:
    for command in batch:
        if not command.future.done():
            command.future.set_exception(error)


def _keep_durable(batch: list[_Command], error: BaseException) -> list[_Command]:
    """The batch's unanswered settlements and releases, to try again; every other unanswered
    command is refused (StoreUnavailable; under contention, its own TooMuchContention)."""
    refusal: BaseException = error
    if not isinstance(error, TooMuchContention):
        refusal = StoreUnavailable("the ledger's store is unavailable; nothing was changed")
        refusal.__cause__ = error
    kept = []
    for command in batch:
        if command.future.done():
            continue
        if command.durable:
            kept.append(command)
        else:
            command.future.set_exception(refusal)
    return kept
