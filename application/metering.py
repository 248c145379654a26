"""One metered call, whatever the API: route → size the hold → reserve → (the adapter goes
upstream) → settle exactly one usage record.

Every inference API (chat completions, legacy completions, Responses, embeddings, Anthropic
Messages) is a thin HTTP adapter over this use case. What each outcome is charged is decided
here, once (`decide_charge`); the hold is sized by domain.pricing.hold_for; the candidates come
from domain.routing. The adapter reports what happened upstream and never computes money.
"""

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol
from uuid import UUID

from application.durable import durable
from application.retry import StoreUnavailable
from application.spend import SpendControl
from domain.errors import (
    ConcurrencyLimitExceeded,
    DailyLimitExceeded,
    DomainError,
    InsufficientCredits,
    MonthlyLimitExceeded,
    RateLimitExceeded,
)
from domain.ledger import Admission, meter_of
from domain.policy import KeyPolicy
from domain.pricing import (
    NO_TOKENS,
    PriceSheet,
    TokenCounts,
    estimate_text_tokens,
    hold_for,
    output_cap,
)
from domain.redaction import safe_error_text
from domain.routing import (
    DIALECTS,
    Candidate,
    Catalogue,
    Dialect,
    ModelEntry,
    ModelKind,
    Provider,
    check_extra_fields,
)
from domain.scope import Scope
from domain.usage import Api, CostSource, Usage

log = logging.getLogger("lowrouter.metering")

MAX_FALLBACK_MODELS = 3  # lowrouter/auto tries at most this many models; the hold covers them


class MeteredKey(Protocol):
    """What metering needs of the authenticated key (projections.lookup.KeyRecord is one)."""

    @property
    def key_id(self) -> UUID: ...
    @property
    def account_id(self) -> UUID: ...
    @property
    def name(self) -> str: ...
    @property
    def scope(self) -> Scope: ...
    @property
    def policy(self) -> KeyPolicy: ...
    @property
    def lineage_id(self) -> UUID | None:
        """The rotation lineage's first key: its limits are the lineage's (None: the key's)."""


# The ledger's refusals of a reservation, and the reason each is recorded under.
REFUSALS: dict[type[DomainError], str] = {
    InsufficientCredits: "insufficient_credits",
    DailyLimitExceeded: "daily_limit_exceeded",
    MonthlyLimitExceeded: "monthly_limit_exceeded",
    RateLimitExceeded: "rate_limit_exceeded",
    ConcurrencyLimitExceeded: "concurrency_limit_exceeded",
}


@dataclass(frozen=True, slots=True)
class MeteredRequest:
    """What an API adapter parsed from its request, in the terms metering needs."""

    api: Api
    model: str  # the requested id (or lowrouter/auto)
    prompt_bound: int  # an upper bound of the prompt's tokens (domain.pricing.prompt_bound)
    output_cap: int | None  # the client's output cap (max_tokens …); None: the model's
    choices: int = 1
    streamed: bool = False
    client_ip: str | None = None
    user_agent: str | None = None
    kind: ModelKind = "chat"
    dialects: tuple[Dialect, ...] = DIALECTS  # the upstream dialects that can serve this API
    extra_fields: frozenset[str] = frozenset()  # fields beyond the API's schema (providers allow)


# --- what happened, and what it is charged ------------------------------------------------------


class Outcome(Enum):
    ANSWERED = "answered"  # the upstream answered (with or without usage)
    BROKEN_OFF = "broken_off"  # a stream's connection broke after part of it was delivered
    OVERSIZED = "oversized"  # a stream event over the size limit, after part was delivered
    TRUNCATED = "truncated"  # a stream ended without its end ([DONE] or usage): cut short
    TRUNCATED_BODY = "truncated_body"  # a non-streamed answer cut mid-read (nothing relayed)
    STALLED = "stalled"  # a stream outlived a deadline (idle or total) after producing something
    BAD_ANSWER = "bad_answer"  # the upstream's answer was not valid (nothing usable came back)
    UPSTREAM_FAILED = "upstream_failed"  # every candidate failed (5xx, unreachable)
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_REFUSED = "upstream_refused"  # the upstream refused the request itself (4xx)
    CLIENT_CLOSED = "client_closed"  # the client hung up mid-stream
    GATEWAY_ERROR = "gateway_error"  # our own failure


# status and status code recorded for each outcome (a refusal records the upstream's code)
_STATUS = {
    Outcome.ANSWERED: ("ok", 200),
    Outcome.BROKEN_OFF: ("upstream_truncated", 502),
    Outcome.OVERSIZED: ("upstream_error", 502),
    Outcome.TRUNCATED: ("upstream_truncated", 502),
    Outcome.TRUNCATED_BODY: ("upstream_truncated", 502),
    Outcome.STALLED: ("upstream_timeout", 504),
    Outcome.BAD_ANSWER: ("upstream_error", 502),
    Outcome.UPSTREAM_FAILED: ("upstream_error", 502),
    Outcome.UPSTREAM_TIMEOUT: ("upstream_timeout", 504),
    Outcome.UPSTREAM_REFUSED: ("upstream_refused", 400),
    Outcome.CLIENT_CLOSED: ("client_closed", 499),
    Outcome.GATEWAY_ERROR: ("gateway_error", 500),
}
# Failures charge nothing: nothing usable reached the client, or it is our fault.
NOT_CHARGED = frozenset(
    {
        Outcome.BAD_ANSWER,
        Outcome.UPSTREAM_FAILED,
        Outcome.UPSTREAM_TIMEOUT,
        Outcome.UPSTREAM_REFUSED,
        Outcome.GATEWAY_ERROR,
        Outcome.TRUNCATED_BODY,
    }
)
# Cut short after part of the answer reached the client: charged as a hang-up is, for what was
# delivered (never zero), from our estimate unless the upstream reported usage.
CUT_SHORT = frozenset(
    {
        Outcome.CLIENT_CLOSED,
        Outcome.BROKEN_OFF,
        Outcome.OVERSIZED,
        Outcome.TRUNCATED,
        Outcome.STALLED,
    }
)


@dataclass(frozen=True, slots=True)
class Charge:
    tokens: TokenCounts
    cost: int  # micro-credits (the ledger still caps it at the hold)
    cost_source: CostSource
    status: str
    status_code: int


def decide_charge(
    outcome: Outcome,
    prices: PriceSheet,
    reported: TokenCounts | None,
    estimated: TokenCounts,
    status_code: int | None = None,
) -> Charge:
    """The charge for one outcome. The upstream's reported usage when there is one, else our
    estimate of what was produced; failures charge nothing; a client that hung up is charged at
    least one completion token (what was produced, never zero)."""
    status, default_code = _STATUS[outcome]
    code = status_code if status_code is not None else default_code
    if outcome in NOT_CHARGED:
        return Charge(NO_TOKENS, 0, "none", status, code)
    tokens, source = (reported, "reported") if reported is not None else (estimated, "estimated")
    if outcome in CUT_SHORT:
        completion = max(tokens.completion_tokens, estimated.completion_tokens, 1)
        if completion != tokens.completion_tokens:
            source = "estimated"
        tokens = TokenCounts(
            tokens.prompt_tokens,
            completion,
            tokens.cached_prompt_tokens,
            tokens.cache_write_tokens,
            tokens.reasoning_tokens,
        )
    cost_source: CostSource = "reported" if source == "reported" else "estimated"
    return Charge(tokens, prices.cost(tokens), cost_source, status, code)


# --- observing outcomes (metrics, timing) -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MeteredOutcome:
    """One settled call, for observers: what, where, how it ended, what it cost."""

    api: Api
    model: str
    provider: str | None
    status: str
    status_code: int
    cost: int  # micro-credits charged (after the ledger's cap at the hold)
    cost_source: CostSource
    tokens: TokenCounts
    upstream_seconds: float  # time spent waiting on the upstream (0 if never reached)
    total_seconds: float
    unbilled: int = 0  # micro-credits the usage cost beyond the hold (over_hold), not charged


class MeteringObserver(Protocol):
    """Watches metered calls (metrics, logs, traces). The first two are called synchronously in
    the request's own context, as the ledger command is submitted; the others once settled."""

    def reserving(self, future: "Future[Admission]", request: MeteredRequest) -> None:
        """The hold is being written (`future` resolves once durable, or to the refusal)."""

    def settling(self, future: "Future[int | None]", usage: Usage) -> None:
        """The usage record is being written (`future` resolves to the amount charged)."""

    def metered(self, outcome: MeteredOutcome) -> None:
        """Called once per settled call, from the ledger's writer thread once the settlement
        is durable: keep it quick; an exception is logged and ignored."""

    def refused(self, api: Api, reason: str) -> None:
        """A request refused before going upstream (one of REFUSALS' reasons)."""


class NoObserver:
    def reserving(self, future: "Future[Admission]", request: MeteredRequest) -> None:
        pass

    def settling(self, future: "Future[int | None]", usage: Usage) -> None:
        pass

    def metered(self, outcome: MeteredOutcome) -> None:
        pass

    def refused(self, api: Api, reason: str) -> None:
        pass


# --- the use case -------------------------------------------------------------------------------


class Metering:
    def __init__(
        self,
        spend: SpendControl,
        catalogue: Catalogue,
        observer: MeteringObserver | None = None,
        timer: Callable[[], float] = time.perf_counter,
        store_wait: float | None = None,
        answer_first_within: float | None = None,
    ) -> None:
        self.spend = spend
        self.catalogue = catalogue
        self.observer: MeteringObserver = observer or NoObserver()
        self.timer = timer
        # The longest a request waits for the ledger to write its hold, or to tell it its
        # settlement is durable (None: as long as it takes). See begin and finish.
        self.store_wait = store_wait
        # A call that finishes within this many seconds of its start is answered as soon as its
        # settlement is queued, not once it is durable (None: every answer waits). It must stay
        # well under the hold timeout: the reconciler never closes a younger hold of a live
        # process, so the settlement is certain to find its hold open and to charge what the
        # answer says (see finish).
        self.answer_first_within = answer_first_within

    def route(self, scope: Scope, request: MeteredRequest) -> list[Candidate]:
        """The (model, provider) pairs to try, at most MAX_FALLBACK_MODELS models; raises a
        domain.routing.RoutingError when none may serve it (or a provider refuses one of the
        request's extra fields)."""
        candidates = self.catalogue.candidates(request.model, scope, request.kind, request.dialects)
        models = list(dict.fromkeys(entry for entry, _ in candidates))[:MAX_FALLBACK_MODELS]
        chosen = [(e, p) for e, p in candidates if e in models]
        check_extra_fields(chosen, request.extra_fields)
        return chosen

    @staticmethod
    def hold(candidates: Sequence[Candidate], request: MeteredRequest) -> int:
        """The hold covers the dearest model the call may end up on."""
        return max(
            hold_for(
                entry.prices,
                request.prompt_bound,
                output_cap(request.output_cap, entry.max_output_tokens),
                request.choices,
            )
            for entry in dict.fromkeys(entry for entry, _ in candidates)
        )

    @staticmethod
    def token_bound(candidates: Sequence[Candidate], request: MeteredRequest) -> int:
        """The tokens a call may use, for tokens-per-minute limits: as the hold, the prompt
        bound and the output cap of every choice."""
        cap = max(
            output_cap(request.output_cap, entry.max_output_tokens) for entry, _ in candidates
        )
        return (request.prompt_bound + cap) * request.choices

    async def begin(
        self, key: MeteredKey, request_id: str, request: MeteredRequest, started: float
    ) -> "MeteredCall":
        """Route and reserve under the key's limits and policy: a durable hold before anything
        goes upstream. Raises a RoutingError or one of REFUSALS (the refusal is recorded)."""
        candidates = self.route(key.scope, request)
        hold = self.hold(candidates, request)
        future = self.spend.admit(
            key.account_id,
            request_id,
            key.key_id,
            request.model,
            hold,
            key.scope.daily_limit,
            policy=key.policy,
            tokens=self.token_bound(candidates, request),
            meter=meter_of(key.key_id, key.lineage_id),
        )
        self._tell(lambda: self.observer.reserving(future, request))
        try:
            admission = await durable(future, within=self.store_wait)
        except (TimeoutError, StoreUnavailable):
            # The store is down or too slow: refuse now rather than hang. A hold still queued
            # is cancelled and never lands. One the writer had taken may still land (or have
            # landed on a connection lost before the commit was acknowledged): the release
            # queued behind it (the writer keeps order, and retries releases) undoes it.
            if not future.cancel():
                self.spend.release(key.account_id, request_id, "store_unavailable")
            raise StoreUnavailable(
                "the ledger's store did not answer in time; nothing was charged"
            ) from None
        except tuple(REFUSALS) as refusal:
            self._refused(key, request, REFUSALS[type(refusal)])
            raise
        except asyncio.CancelledError:  # the client left while the hold was being written
            self.spend.release(key.account_id, request_id, "client_closed")
            raise
        return MeteredCall(self, key, request_id, request, candidates, hold, started, admission)

    def _refused(self, key: MeteredKey, request: MeteredRequest, reason: str) -> None:
        self.spend.record_refusal(key.account_id, key.key_id, reason)
        self._tell(lambda: self.observer.refused(request.api, reason))

    @staticmethod
    def _tell(notify: Callable[[], None]) -> None:
        """An observer's failure never fails the call."""
        try:
            notify()
        except Exception:
            log.exception("a metering observer failed")


@dataclass
class MeteredCall:
    """One reserved call, from its hold to its one settlement."""

    metering: Metering
    key: MeteredKey
    request_id: str
    request: MeteredRequest
    candidates: list[Candidate]
    hold: int
    started: float
    admission: Admission | None = None  # the day charged and the key's rate window
    upstream_seconds: float = 0.0
    _upstream_since: float | None = None
    charge: Charge | None = None  # what was decided, once settled
    _settlement: "Future[int | None] | None" = field(default=None, repr=False)
    _last: Candidate | None = None
    settlement_pending: bool = False  # answered before the settlement was durable (see finish)

    @property
    def settled(self) -> bool:
        return self._settlement is not None

    def output_cap(self, entry: ModelEntry) -> int:
        """The output cap sent upstream to `entry`, whatever the client sent: the one the hold
        covers (the hold is sized for the dearest candidate at its own cap)."""
        return output_cap(self.request.output_cap, entry.max_output_tokens)

    def estimate(self, produced_characters: int) -> TokenCounts:
        """What we count when the upstream says nothing: the prompt bound, and the produced
        text (tool-call names and arguments included) at about four characters a token."""
        return TokenCounts(self.request.prompt_bound, estimate_text_tokens(produced_characters))

    # timing the upstream leg (for observers' overhead figures)
    def upstream_began(self, entry: ModelEntry, provider: Provider) -> None:
        self._last = (entry, provider)
        self._upstream_since = self.metering.timer()

    def upstream_ended(self) -> None:
        if self._upstream_since is not None:
            self.upstream_seconds += self.metering.timer() - self._upstream_since
            self._upstream_since = None

    def settle(
        self,
        outcome: Outcome,
        entry: ModelEntry | None = None,
        provider: Provider | None = None,
        *,
        reported: TokenCounts | None = None,
        produced: int = 0,
        status_code: int | None = None,
        upstream_cost: str | None = None,
    ) -> "Future[int | None]":
        """Settle the call's one usage record (a second call returns the first settlement).
        Synchronous submit: safe in a `finally` of a cancelled task; await `durable()` on it."""
        if self._settlement is not None:
            return self._settlement
        self.upstream_ended()
        if entry is None:
            entry, provider = self._last or self.candidates[0]
        charge = self.charge = decide_charge(
            outcome, entry.prices, reported, self.estimate(produced), status_code
        )
        usage = Usage.of(
            charge.tokens,
            key_name=self.key.name,
            model=entry.id,
            provider=provider.name if provider else None,
            region=provider.region if provider else None,
            status=charge.status,
            status_code=charge.status_code,
            latency_ms=int((self.metering.timer() - self.started) * 1000),
            streamed=self.request.streamed,
            client_ip=self.request.client_ip,
            user_agent=self.request.user_agent,
            api=self.request.api,
            cost_source=charge.cost_source,
            upstream_cost=upstream_cost,
        )
        future = self._charged(
            self.metering.spend.settle(self.key.account_id, self.request_id, charge.cost, usage)
        )
        self._settlement = future
        self.metering._tell(lambda: self.metering.observer.settling(future, usage))
        future.add_done_callback(lambda done: self._observe(done, usage))
        return future

    async def finish(
        self,
        outcome: Outcome,
        entry: ModelEntry | None = None,
        provider: Provider | None = None,
        *,
        reported: TokenCounts | None = None,
        produced: int = 0,
        status_code: int | None = None,
        upstream_cost: str | None = None,
    ) -> int:
        """Settle; the amount charged. A call within the metering's `answer_first_within` is
        answered once its settlement is queued (`settlement_pending`): the writer applies it in
        order after the hold, which is durable, so what it charges is known now; if the process
        dies before it lands, the reconciler settles the hold at the held amount, `unsettled`.
        Any other call waits until the settlement is durable; if the store is slow (an outage),
        at most the metering's `store_wait`, then it is answered with the amount the settlement
        charges: it stays queued and is retried until it lands."""
        future = self.settle(
            outcome,
            entry,
            provider,
            reported=reported,
            produced=produced,
            status_code=status_code,
            upstream_cost=upstream_cost,
        )
        within = self.metering.answer_first_within
        if within is not None and self.metering.timer() - self.started < within:
            return self._answered_before(future)
        try:
            charged = await durable(future, within=self.metering.store_wait)
        except TimeoutError:
            return self._answered_before(future)
        return charged or 0

    def _answered_before(self, settlement: "Future[int | None]") -> int:
        """Answer now with what the settlement will charge; if it fails after all, nobody waits
        for it any more: say so in the log (the reconciler settles the hold later)."""
        self.settlement_pending = True
        settlement.add_done_callback(self._log_late_failure)  # at once if already done
        return self.settlement_charge

    def _log_late_failure(self, done: "Future[int | None]") -> None:
        if not done.cancelled() and (error := done.exception()) is not None:
            log.error(
                "the settlement of request %s failed after its answer was sent: %s",
                self.request_id,
                safe_error_text(error),
            )

    def _charged(self, settled: "Future[int | None]") -> "Future[int | None]":
        """What the ledger charged this call: the settlement's amount, or, when its hold was
        already closed (the reconciler settled it: this process looked dead, or the request
        outlived every deadline), what the reconciler charged — whatever page it did it on —
        so the client, the log line and the metrics all say what the ledger holds. None: the
        hold was released (nothing charged)."""
        charged: Future[int | None] = Future()
        spend, account_id = self.metering.spend, self.key.account_id

        def copy_to_charged(done: "Future[int | None]") -> None:
            if done.cancelled():
                charged.cancel()
            elif (error := done.exception()) is not None:
                charged.set_exception(error)
            else:
                charged.set_result(done.result())

        def settled_or_reconciled(done: "Future[int | None]") -> None:
            if done.cancelled() or done.exception() is not None or done.result() is not None:
                copy_to_charged(done)
            else:  # on the writer's thread: a read queued behind it, not waited for here
                spend.reconciled_cost(account_id, self.request_id).add_done_callback(
                    copy_to_charged
                )

        settled.add_done_callback(settled_or_reconciled)
        return charged

    @property
    def settlement_charge(self) -> int:
        """What the queued settlement charges once it lands on the open hold: the decided cost,
        capped at the hold (LedgerPage.settle)."""
        assert self.charge is not None
        return min(self.charge.cost, self.hold)

    def abandon(self) -> None:
        """Our own failure before a settlement: record it, charge nothing."""
        if self._settlement is None:
            self.settle(Outcome.GATEWAY_ERROR)

    def _observe(self, done: "Future[int | None]", usage: Usage) -> None:
        if done.cancelled():
            return
        if done.exception() is not None:
            return
        charged = done.result()
        decided = self.charge.cost if self.charge is not None else 0
        outcome = MeteredOutcome(
            api=usage.api,
            model=usage.model,
            provider=usage.provider,
            status=usage.status,
            status_code=usage.status_code,
            cost=charged or 0,
            cost_source=usage.cost_source,
            tokens=usage.tokens,
            upstream_seconds=self.upstream_seconds,
            total_seconds=usage.latency_ms / 1000,
            unbilled=max(0, decided - charged) if charged is not None else 0,
        )
        self.metering._tell(lambda: self.metering.observer.metered(outcome))
