"""The HTTP side of a metered call, shared by every inference API: authenticate, parse, begin
the metered call (route + hold), try the candidates through their dialect's exchange, relay the
answer (streamed or not) and report each outcome to the call, which settles it exactly once.

An API adapter (chat, completions, responses, embeddings, messages) only says how to parse its
request and which exchange serves it on each upstream dialect (`Api`).
"""

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, NoReturn

import anyio
import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from application.metering import REFUSALS, MeteredCall, MeteredRequest, Outcome
from domain.routing import Candidate, Dialect, ModelEntry, Provider, RoutingError
from domain.tokens import TokenKind
from infrastructure.dialects.base import Exchange
from infrastructure.dialects.sse import EventTooLarge, SseParser, sse_data
from infrastructure.http.errors import ApiError, api_error
from infrastructure.http.gateway import Gateway
from infrastructure.http.jsonresponse import json_response
from infrastructure.http.limits import OFF_LOOP_BYTES
from infrastructure.http.refusals import rate_headers, refusal_error
from infrastructure.http.streaming import DeadlineStreamingResponse
from infrastructure.observability.context import note_pending_charge
from infrastructure.upstream import (
    UpstreamError,
    UpstreamResponse,
    UpstreamTimeout,
    UpstreamTooLarge,
)
from infrastructure.upstream_errors import refusal_text
from projections.lookup import KeyRecord


@dataclass(frozen=True)
class Api:
    """How one inference API is served."""

    parse: Callable[[bytes], dict[str, Any]]  # the request body, checked (raises ApiError)
    metered: Callable[[dict[str, Any]], MeteredRequest]  # what metering needs of it
    exchanges: Mapping[Dialect, Exchange]  # who serves it, per upstream dialect
    # the Authorization header's value to authenticate with (None: the request's own)
    credential: Callable[[Request], str | None] = lambda request: None


async def serve(request: Request, api: Api) -> Response:
    gateway: Gateway = request.app.state.gateway
    started = time.perf_counter()
    key = await gateway.authenticate(request, TokenKind.INFERENCE, api.credential(request))
    raw = await gateway.read_body(request)
    # A large body is parsed (and walked) off the event loop.
    body = await run_in_threadpool(api.parse, raw) if len(raw) > OFF_LOOP_BYTES else api.parse(raw)
    metered = api.metered(body)
    metered = _with_client(metered, request)
    call = await begin(gateway, key, request.state.request_id, metered, started)
    limits = Deadlines.of(gateway)
    try:
        if metered.streamed:
            response = await stream(gateway, call, api, body, limits)
        else:
            response = await complete(gateway, call, api, body, limits)
        response.headers.update(rate_headers(call.admission.rate if call.admission else None))
        return response
    except BaseException:
        call.abandon()  # whatever went wrong before a settlement: one record, no charge
        raise


def _with_client(metered: MeteredRequest, request: Request) -> MeteredRequest:
    return replace(
        metered,
        client_ip=getattr(request.state, "client_ip", None),
        user_agent=(request.headers.get("user-agent") or "")[:300] or None,
    )


async def begin(
    gateway: Gateway, key: KeyRecord, request_id: str, metered: MeteredRequest, started: float
) -> MeteredCall:
    try:
        return await gateway.metering.begin(key, request_id, metered, started)
    except RoutingError as error:
        raise api_error(error) from None
    except tuple(REFUSALS) as refusal:
        answer = refusal_error(refusal, key.display, gateway.clock(), metered.output_cap)
        if answer is None:
            raise
        raise answer from None


# --- choosing the upstream ---------------------------------------------------------------------

Failure = tuple[int, str, str]  # (status, code, detail)


@dataclass(frozen=True)
class Deadlines:
    """When the request's upstream leg must be over (the event loop's clock), and the longest
    gap between two stream events; besides the per-read timeout of the upstream client."""

    total: float
    idle: float

    @classmethod
    def of(cls, gateway: Gateway) -> "Deadlines":
        settings = gateway.runtime.settings
        now = asyncio.get_running_loop().time()
        return cls(now + settings.max_request_seconds, settings.upstream_idle_seconds)

    def next_event(self) -> float:
        """The moment the next stream event must have arrived by."""
        return min(self.total, asyncio.get_running_loop().time() + self.idle)


@dataclass(frozen=True)
class Answer:
    entry: ModelEntry
    provider: Provider
    exchange: Exchange
    response: UpstreamResponse


async def first_answer(
    gateway: Gateway,
    call: MeteredCall,
    api: Api,
    body: dict[str, Any],
    stream: bool,
    limits: Deadlines,
) -> Answer | Failure:
    """Try the candidates in order; fall back on a connection error, a timeout, a 5xx or a body
    cut mid-read, all before anything was sent to the client. A non-streaming answer is read in
    full here. Past the request's deadline no candidate is tried any more."""
    failure: Failure = (502, "upstream_error", "")
    for entry, provider in call.candidates:
        exchange = api.exchanges[provider.api]
        shaped = exchange.upstream_body(
            body, entry, provider, stream=stream, cap=call.output_cap(entry)
        )
        content = orjson.dumps(shaped)
        call.upstream_began(entry, provider)
        try:
            async with asyncio.timeout_at(limits.total):
                response = await gateway.upstream.send(provider, content, exchange.path)
        except (UpstreamTimeout, TimeoutError):
            failure = (504, "upstream_timeout", f"{provider.name} timed out")
            continue
        except UpstreamError as error:
            failure = (502, "upstream_unreachable", f"{provider.name}: {error}")
            continue
        if not stream or response.status_code >= 400:
            try:
                async with asyncio.timeout_at(limits.total):
                    await response.aread()
            except (UpstreamTimeout, TimeoutError):
                await response.aclose()
                failure = (504, "upstream_timeout", f"{provider.name} timed out mid-answer")
                continue
            except UpstreamTooLarge as error:
                await response.aclose()
                failure = (502, "upstream_error", f"{provider.name}: {error}")
                continue
            except UpstreamError as error:  # it answered, then the body broke off
                await response.aclose()
                failure = (
                    502,
                    "upstream_truncated",
                    f"{provider.name} cut its answer off mid-read ({error})",
                )
                continue
            finally:
                call.upstream_ended()
        if response.status_code >= 500:
            await response.aclose()
            failure = (502, "upstream_error", f"{provider.name} answered {response.status_code}")
            continue
        return Answer(entry, provider, exchange, response)
    return failure


async def usable_answer(
    gateway: Gateway,
    call: MeteredCall,
    api: Api,
    body: dict[str, Any],
    stream: bool,
    limits: Deadlines,
) -> Answer:
    """The first upstream answer that can be relayed; a failure of them all, or an upstream
    refusal (4xx), is settled at no charge and raised as the client's error."""
    answer = await first_answer(gateway, call, api, body, stream, limits)
    if not isinstance(answer, Answer):
        await upstream_failed(call, call.candidates[-1], answer)
    if answer.response.status_code >= 400:
        await upstream_refused(call, answer)
    return answer


async def finish(call: MeteredCall, outcome: Outcome, *args: Any, **kwargs: Any) -> int:
    """The call's settlement (MeteredCall.finish); an answer given before it is durable notes
    the cost it charges for the request's headers, log line and span."""
    charged = await call.finish(outcome, *args, **kwargs)
    if call.settlement_pending:
        note_pending_charge(charged)
    return charged


async def upstream_failed(call: MeteredCall, last: Candidate, failure: Failure) -> NoReturn:
    status, code, detail = failure
    outcome = {
        "upstream_timeout": Outcome.UPSTREAM_TIMEOUT,
        "upstream_truncated": Outcome.TRUNCATED_BODY,
    }.get(code, Outcome.UPSTREAM_FAILED)
    await finish(call, outcome, *last, status_code=status)
    what = "timed out" if status == 504 else "failed"
    raise ApiError(status, code, f"The upstream provider {what} ({detail}); you were not charged.")


async def upstream_refused(call: MeteredCall, answer: Answer) -> NoReturn:
    """The upstream refused the request itself (4xx): pass its error on, charge nothing."""
    status = answer.response.status_code
    await finish(call, Outcome.UPSTREAM_REFUSED, answer.entry, answer.provider, status_code=status)
    raise ApiError(
        status if status != 401 else 502,
        "upstream_refused",
        # Our words: the upstream's message without credentials or token-like strings.
        refusal_text(answer.provider, status, answer.response.content),
    )


# --- non-streaming -----------------------------------------------------------------------------


async def complete(
    gateway: Gateway, call: MeteredCall, api: Api, body: dict[str, Any], limits: Deadlines
) -> Response:
    answer = await usable_answer(gateway, call, api, body, False, limits)
    entry, provider, exchange = answer.entry, answer.provider, answer.exchange
    try:
        reading = exchange.read(orjson.loads(answer.response.content), entry)
    except (ValueError, TypeError, KeyError, AttributeError):
        await finish(call, Outcome.BAD_ANSWER, entry, provider)
        raise ApiError(
            502,
            "upstream_bad_response",
            f"The upstream provider {provider.name} sent an invalid response.",
        ) from None
    charged = await finish(
        call,
        Outcome.ANSWERED,
        entry,
        provider,
        reported=reading.reported,
        produced=reading.produced,
        upstream_cost=reading.upstream_cost,
    )
    assert call.charge is not None
    data = exchange.answer(reading, call.charge.tokens, charged)
    return json_response(data, headers={"x-lowrouter-provider": provider.name})


# --- streaming ---------------------------------------------------------------------------------


async def stream(
    gateway: Gateway, call: MeteredCall, api: Api, body: dict[str, Any], limits: Deadlines
) -> Response:
    answer = await usable_answer(gateway, call, api, body, True, limits)

    async def unstarted_relay_cleanup() -> None:
        """What relay's `finally` does, for a relay that never started (nothing relayed)."""
        if not call.settled:
            call.settle(Outcome.CLIENT_CLOSED, answer.entry, answer.provider)
        await answer.response.aclose()  # idempotent: a relay that ran closed it already

    return DeadlineStreamingResponse(
        relay(call, answer, limits),
        limits.total,  # a client that stops reading is cut then too
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-lowrouter-provider": answer.provider.name},
        cleanup=unstarted_relay_cleanup,
    )


async def relay(
    call: MeteredCall, answer: Answer, limits: Deadlines
) -> AsyncGenerator[bytes, None]:
    """Pass events on as they come (in the client API's shape); end with our usage and cost.
    A stream that ends without its end ([DONE] or the usage), breaks off, or outlives a deadline
    ends with an error event and is charged for what was delivered; one that broke before
    delivering anything is an upstream failure, charged nothing."""
    entry, provider, response = answer.entry, answer.provider, answer.response
    events = answer.exchange.relay(entry, call.request_id)
    parser = SseParser()
    outcome = Outcome.CLIENT_CLOSED
    try:
        try:
            async for payloads in _paced(sse_data(response, parser), limits):
                out = []
                for payload in payloads:
                    try:
                        event = orjson.loads(payload)
                    except orjson.JSONDecodeError:
                        continue
                    if isinstance(event, dict) and (sent := events.feed(event)):
                        out.append(sent)
                if out:  # what arrived together leaves together: one write, not one per event
                    yield b"".join(out)
            if parser.done or events.reported is not None:
                outcome, problem = Outcome.ANSWERED, None
            else:
                outcome = Outcome.TRUNCATED
                problem = (
                    f"The upstream provider {provider.name} ended the stream before its end "
                    "(no [DONE], no usage); you are charged for what was delivered."
                )
        except (UpstreamTimeout, TimeoutError):
            outcome = Outcome.STALLED
            problem = (
                f"The upstream provider {provider.name} stalled past the request's deadline; "
                "you are charged for what was delivered."
            )
        except UpstreamError as error:  # the connection broke: the answer is cut short
            outcome = Outcome.BROKEN_OFF
            problem = (
                f"The upstream provider {provider.name} broke off the stream "
                f"({type(error).__name__}); you are charged for what was delivered."
            )
        except EventTooLarge:  # the upstream sent what no client should get
            outcome = Outcome.OVERSIZED
            problem = (
                f"The upstream provider {provider.name} sent a stream event over the size limit "
                "(EventTooLarge); you are charged for what was delivered."
            )
        if events.relayed == 0 and events.reported is None:
            # Nothing valid came back (garbage, or an empty stream): an upstream failure.
            outcome = Outcome.BAD_ANSWER
            problem = (
                f"The upstream provider {provider.name} sent no valid completion chunks; "
                "you were not charged."
            )
        if problem is not None:  # one error event, the stream's last word before our usage
            yield events.error(problem)
        charged = await finish(
            call,
            outcome,
            entry,
            provider,
            reported=events.reported,
            produced=events.produced,
            upstream_cost=events.upstream_cost,
        )
        assert call.charge is not None
        yield events.close(call.charge.tokens, charged)
    finally:
        if not call.settled:
            # The client hung up (or we were cancelled) mid-stream: charge what was produced,
            # never nothing. A synchronous submit: no await can be cancelled here.
            call.settle(
                Outcome.CLIENT_CLOSED,
                entry,
                provider,
                reported=events.reported,
                produced=events.produced,
                upstream_cost=events.upstream_cost,
            )
        with anyio.CancelScope(shield=True):
            await response.aclose()


async def _paced(
    batches: AsyncIterator[list[bytes]], limits: Deadlines
) -> AsyncIterator[list[bytes]]:
    """The stream's batches of events, each within the idle and total deadlines (TimeoutError
    when one is missed). Bytes that complete no event (comments, a dripped line) are no
    progress: the wait for the next event is not reset by them."""
    iterator = aiter(batches)
    while True:
        try:
            async with asyncio.timeout_at(limits.next_event()):
                batch = await anext(iterator)
        except StopAsyncIteration:
            return
        yield batch
