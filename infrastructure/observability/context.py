"""What one request did, noted as it happens, for its log line, metrics and trace.

The middleware puts an `Observation` in a context variable; the hot path notes into it with a few
attribute writes (no I/O, no locks): which key, which model and provider, the reservation's and
the settlement's start and end, each upstream call's time. Everything else (metrics, the log
line, spans) is done once, after the response, from what was noted. Outside a request (the CLI,
the reconciler) there is no observation and every hook does nothing.
"""

from collections.abc import Callable
from concurrent.futures import Future
from contextvars import ContextVar
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

# Paths of the inference APIs: they carry x-lowrouter-overhead-ms (and the cost when not
# streamed), and their `api` label is the usage history's.
INFERENCE_APIS = {
    "/api/v1/chat/completions": "chat.completions",
    "/api/v1/completions": "completions",
    "/api/v1/responses": "responses",
    "/api/v1/embeddings": "embeddings",
    "/api/v1/messages": "messages",
}


def api_of(path: str) -> str:
    """A small, fixed set of labels for every path (never a path itself: cardinality)."""
    inference = INFERENCE_APIS.get(path)
    if inference is not None:
        return inference
    if path in ("/api/v1/models", "/api/v1/key"):
        return path.rsplit("/", 1)[1]
    if path.startswith("/api/"):
        return "management"
    if path.startswith("/dashboard"):
        return "dashboard"
    if path in ("/healthz", "/readyz"):
        return "health"
    if path == "/metrics":
        return "metrics"
    if path.startswith("/demo/"):
        return "demo"
    if path in ("/docs", "/api/v1/openapi.json"):
        return "docs"
    return "other"


@dataclass(slots=True)
class Span:
    """A timed step of the request (perf_counter seconds), e.g. the reservation."""

    started: float
    ended: float | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Observation:
    request_id: str | None
    method: str
    path: str
    api: str
    started: float  # perf_counter()
    wall_ns: int  # time.time_ns() at `started`, to place spans on the wall clock
    client_ip: str | None = None
    inference: bool = False
    status: int = 0
    upstream_seconds: float = 0.0  # waiting on upstreams (headers and every body read)
    client_seconds: float = 0.0  # waiting for the client to take the response (backpressure)
    key_display: str | None = None
    account_id: str | None = None
    model: str | None = None  # the catalogue model that served (or was last tried)
    requested_model: str | None = None
    provider: str | None = None
    outcome: str | None = None  # the usage row's status: ok, upstream_error, client_closed…
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost: int | None = None  # micro-credits charged, once the settlement is durable
    refusal: str | None = None  # the error code of a refusal lowrouter answered
    streamed: bool = False
    reservation: Span | None = None
    settlement: Span | None = None
    upstream_calls: list[Span] = field(default_factory=list)

    def overhead_seconds(self, now: float) -> float:
        """The time in lowrouter itself: not waiting on the upstream, nor on a slow client."""
        return max(0.0, now - self.started - self.upstream_seconds - self.client_seconds)

    def wall(self, moment: float) -> int:
        """A perf_counter() moment of this request as nanoseconds since the epoch."""
        return self.wall_ns + int((moment - self.started) * 1e9)


CURRENT: ContextVar[Observation | None] = ContextVar("lowrouter_observation", default=None)

# Called (in the ledger writer's thread) with the model and micro-credits of every charge
# made for a request, once durable; set by the metrics.
charged_hook: Callable[[str, int], None] | None = None
unbilled_hook: Callable[[str, int], None] | None = None  # (model, micro-credits beyond a hold)


def current() -> Observation | None:
    return CURRENT.get()


# Hooks on the hot path ------------------------------------------------------------------------


def note_key(display: str, account_id: object, client_ip: str | None = None) -> None:
    """The presented key (display form only, never the token), its account, and the client's
    address as the usage history records it (trusted proxies resolved)."""
    observation = CURRENT.get()
    if observation is not None:
        observation.key_display = display
        observation.account_id = str(account_id)
        if client_ip is not None:
            observation.client_ip = client_ip


def note_error(status: int, code: str) -> None:
    """An error answer: a refusal by lowrouter (a 4xx of its own) is counted by its code; an
    upstream's failure or refusal is counted as an upstream error instead."""
    observation = CURRENT.get()
    if observation is not None and status < 500 and not code.startswith("upstream_"):
        observation.refusal = code


def track_reservation(future: "Future[Any]", model: str) -> None:
    """The hold being written: its span ends when it is durable (or refused)."""
    observation = CURRENT.get()
    if observation is None:
        return
    observation.requested_model = model
    span = observation.reservation = Span(perf_counter(), attributes={"lowrouter.model": model})

    def done(_future: "Future[Any]") -> None:
        span.ended = perf_counter()

    future.add_done_callback(done)


def track_settlement(
    future: "Future[int | None]",
    *,
    model: str,
    provider: str | None,
    prompt_tokens: int,
    completion_tokens: int,
    outcome: str,
    streamed: bool,
    client_ip: str | None = None,
) -> "Future[int | None]":
    """The usage record being written; returns `future` so a call site can stay one line."""
    observation = CURRENT.get()
    span = Span(perf_counter(), attributes={"lowrouter.outcome": outcome})
    if observation is not None:
        observation.model, observation.provider = model, provider
        observation.prompt_tokens, observation.completion_tokens = prompt_tokens, completion_tokens
        observation.outcome, observation.streamed = outcome, streamed
        observation.settlement = span
        if client_ip is not None:  # the address the usage row records (proxies resolved)
            observation.client_ip = client_ip
    hook = charged_hook

    def done(settled: "Future[int | None]") -> None:
        span.ended = perf_counter()
        if settled.cancelled() or settled.exception() is not None:
            return
        charged = settled.result()
        if charged is None:  # the hold was already closed: nothing charged now
            return
        if observation is not None:
            observation.cost = charged
        if hook is not None:
            hook(model, charged)

    future.add_done_callback(done)
    return future


def note_pending_charge(charged: int) -> None:
    """The request was answered before its settlement was durable (a store outage): the cost
    the settlement charges once it lands, for this request's headers and log line."""
    observation = CURRENT.get()
    if observation is not None and observation.cost is None:
        observation.cost = charged
