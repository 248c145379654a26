"""POST /api/v1/chat/completions: authenticate, route, reserve, forward, settle.

Every request that was reserved ends in exactly one settlement (a usage record), whatever
happens: success, upstream failure (charged nothing), or the client hanging up mid-stream
(charged for what was produced). The hold is taken before anything goes upstream.
"""

import asyncio
import time
from collections.abc import AsyncIterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, NoReturn

import anyio
import httpx
import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from domain.errors import DomainError
from domain.ledger import Admission
from domain.money import format_credits
from domain.tokens import TokenKind
from infrastructure.catalogue import Catalogue, ModelEntry, Provider, estimate_prompt_tokens
from infrastructure.http.errors import ApiError
from infrastructure.http.gateway import Gateway, durable
from infrastructure.http.jsonresponse import json_response
from infrastructure.http.refusals import rate_headers, refusal_error
from infrastructure.observability.context import track_reservation, track_settlement
from infrastructure.upstream import (
    completion_text_length,
    estimate_text_tokens,
    upstream_body,
    usage_counts,
)
from infrastructure.upstream_errors import refusal_text
from projections.lookup import KeyRecord

MAX_FALLBACK_MODELS = 3  # lowrouter/auto tries at most this many models; the hold covers them


@dataclass
class Attempt:
    """One reserved request, from hold to settlement."""

    gateway: Gateway
    key: KeyRecord
    request_id: str
    started: float
    client_ip: str | None
    user_agent: str | None
    prompt_estimate: int
    streamed: bool

    def settle(
        self,
        entry: ModelEntry,
        provider: Provider | None,
        prompt_tokens: int,
        completion_tokens: int,
        status: str,
        status_code: int,
        charge: bool = True,
    ) -> "Future[int | None]":
        cost = Catalogue.cost(entry, prompt_tokens, completion_tokens) if charge else 0
        future = self.gateway.spend.settle(
            self.key.account_id,
            self.request_id,
            cost,
            key_name=self.key.name,
            model=entry.id,
            provider=provider.name if provider else None,
            region=provider.region if provider else None,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            status=status,
            status_code=status_code,
            latency_ms=int((time.perf_counter() - self.started) * 1000),
            streamed=self.streamed,
            client_ip=self.client_ip,
            user_agent=self.user_agent,
        )
        return track_settlement(
            future,
            model=entry.id,
            provider=provider.name if provider else None,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            outcome=status,
            streamed=self.streamed,
            client_ip=self.client_ip,
        )


async def chat_completions(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    started = time.perf_counter()
    key = await gateway.authenticate(request, TokenKind.INFERENCE)
    body = parse_completion_request(await gateway.read_json(request))
    candidates = gateway.route(body["model"], key.scope)
    prompt_estimate = estimate_prompt_tokens(body)
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    models = list(dict.fromkeys(entry for entry, _ in candidates))[:MAX_FALLBACK_MODELS]
    candidates = [(e, p) for e, p in candidates if e in models]
    n = body.get("n") or 1
    hold = max(gateway.catalogue.max_cost(entry, prompt_estimate, max_tokens) for entry in models)
    hold *= n
    # The token estimate tokens_per_minute holds: the prompt bound and the output cap, as the hold.
    output_cap = max(max_tokens or entry.max_output_tokens for entry in models)
    tokens = (prompt_estimate + output_cap) * n
    request_id: str = request.state.request_id
    try:
        admission = await reserve(gateway, key, request_id, body["model"], hold, max_tokens, tokens)
    except asyncio.CancelledError:  # the client left while the hold was being written
        gateway.spend.release(key.account_id, request_id, "client_closed")
        raise
    attempt = Attempt(
        gateway=gateway,
        key=key,
        request_id=request_id,
        started=started,
        client_ip=getattr(request.state, "client_ip", None),
        user_agent=(request.headers.get("user-agent") or "")[:300] or None,
        prompt_estimate=prompt_estimate,
        streamed=bool(body.get("stream")),
    )
    try:
        if attempt.streamed:
            response = await stream_completion(attempt, body, candidates)
        else:
            response = await complete(attempt, body, candidates)
        response.headers.update(rate_headers(admission.rate))
        return response
    except BaseException:
        # Whatever went wrong before a settlement, the hold must not stay open.
        gateway.spend.release(key.account_id, request_id, "gateway_error")
        raise


async def reserve(
    gateway: Gateway,
    key: KeyRecord,
    request_id: str,
    model: str,
    hold: int,
    max_tokens: Any,
    tokens: int = 0,
) -> Admission:
    """Hold the request under the key's limits and policy (one ledger step); a refusal is
    recorded and raised as its API answer (infrastructure.http.refusals)."""
    future = gateway.spend.admit(
        key.account_id,
        request_id,
        key.key_id,
        model,
        hold,
        key.scope.daily_limit,
        policy=key.policy,
        tokens=tokens,
    )
    track_reservation(future, model)
    try:
        return await durable(future)
    except DomainError as refusal:
        answer = refusal_error(refusal, key.display, gateway.clock(), max_tokens)
        if answer is None:
            raise
        reason, error = answer
        gateway.spend.record_refusal(key.account_id, key.key_id, reason)
        raise error from None


def parse_completion_request(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(
            400,
            "missing_model",
            "`model` is required (a model id or lowrouter/auto).",
            param="model",
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(
            400, "missing_messages", "`messages` must be a non-empty list.", param="messages"
        )
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise ApiError(
            400,
            "invalid_messages",
            "Each message must be an object with a `role`.",
            param="messages",
        )
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 10_000_000
        ):
            raise ApiError(
                400, "invalid_max_tokens", f"`{name}` must be a positive integer.", param=name
            )
    n = body.get("n")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 16):
        raise ApiError(400, "invalid_n", "`n` must be an integer from 1 to 16.", param="n")
    if "stream" in body and not isinstance(body["stream"], bool | None):
        raise ApiError(400, "invalid_stream", "`stream` must be true or false.", param="stream")
    if not isinstance(body.get("stream_options"), dict | None):
        raise ApiError(
            400,
            "invalid_stream_options",
            "`stream_options` must be an object.",
            param="stream_options",
        )
    return body


# Choosing the upstream ----------------------------------------------------------------------


Failure = tuple[int, str, str]  # (status, code, detail)


@dataclass(frozen=True)
class Answer:
    entry: ModelEntry
    provider: Provider
    response: httpx.Response


async def first_answer(
    attempt: Attempt,
    body: dict[str, Any],
    candidates: list[tuple[ModelEntry, Provider]],
    stream: bool,
) -> Answer | Failure:
    """Try the candidates in order; fall back on a connection error, a timeout or a 5xx, all
    before anything was sent to the client. A non-streaming answer is read in full here."""
    upstream = attempt.gateway.upstream
    failure: Failure = (502, "upstream_error", "")
    for entry, provider in candidates:
        content = orjson.dumps(upstream_body(body, entry, stream=stream))
        try:
            response = await upstream.send(provider, content)
            if not stream or response.status_code >= 400:
                await response.aread()
        except httpx.TimeoutException:
            failure = (504, "upstream_timeout", f"{provider.name} timed out")
            continue
        except httpx.TransportError as error:
            failure = (502, "upstream_unreachable", f"{provider.name}: {type(error).__name__}")
            continue
        if response.status_code >= 500:
            await response.aclose()
            failure = (502, "upstream_error", f"{provider.name} answered {response.status_code}")
            continue
        return Answer(entry, provider, response)
    return failure


async def usable_answer(
    attempt: Attempt,
    body: dict[str, Any],
    candidates: list[tuple[ModelEntry, Provider]],
    stream: bool,
) -> Answer:
    """The first upstream answer that can be relayed; a failure of them all, or an upstream
    refusal (4xx), is recorded at no charge and raised as the client's error."""
    answer = await first_answer(attempt, body, candidates, stream)
    if not isinstance(answer, Answer):
        await upstream_failed(attempt, candidates[-1], answer)
    if answer.response.status_code >= 400:
        response = answer.response
        await upstream_refused(
            attempt, answer.entry, answer.provider, response.status_code, response.content
        )
    return answer


# Non-streaming ----------------------------------------------------------------------------


async def complete(
    attempt: Attempt, body: dict[str, Any], candidates: list[tuple[ModelEntry, Provider]]
) -> Response:
    answer = await usable_answer(attempt, body, candidates, stream=False)
    entry, provider, response = answer.entry, answer.provider, answer.response
    try:
        data = orjson.loads(response.content)
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise ValueError("no choices")
    except ValueError:
        await durable(attempt.settle(entry, provider, 0, 0, "upstream_error", 502, charge=False))
        raise ApiError(
            502,
            "upstream_bad_response",
            f"The upstream provider {provider.name} sent an invalid response.",
        ) from None
    counts = usage_counts(data.get("usage"))
    if counts is None:
        counts = (attempt.prompt_estimate, estimate_text_tokens(completion_text_length(data)))
    charged = await durable(attempt.settle(entry, provider, *counts, "ok", 200))
    data["model"] = entry.id
    usage = data["usage"] if isinstance(data.get("usage"), dict) else {}
    usage.update(
        prompt_tokens=counts[0],
        completion_tokens=counts[1],
        total_tokens=counts[0] + counts[1],
        cost=format_credits(charged or 0),
    )
    data["usage"] = usage
    return json_response(data, headers={"x-lowrouter-provider": provider.name})


async def upstream_failed(
    attempt: Attempt, last: tuple[ModelEntry, Provider], failure: Failure
) -> NoReturn:
    status, code, detail = failure
    entry, provider = last
    outcome = "upstream_timeout" if status == 504 else "upstream_error"
    await durable(attempt.settle(entry, provider, 0, 0, outcome, status, charge=False))
    what = "timed out" if status == 504 else "failed"
    raise ApiError(status, code, f"The upstream provider {what} ({detail}); you were not charged.")


async def upstream_refused(
    attempt: Attempt, entry: ModelEntry, provider: Provider, status: int, content: bytes
) -> NoReturn:
    """The upstream refused the request itself (4xx): pass its error on, charge nothing."""
    await durable(attempt.settle(entry, provider, 0, 0, "upstream_refused", status, charge=False))
    raise ApiError(
        status if status != 401 else 502,
        "upstream_refused",
        refusal_text(provider, status, content),  # sanitized: never the upstream's body itself
    )


# Streaming --------------------------------------------------------------------------------


async def stream_completion(
    attempt: Attempt, body: dict[str, Any], candidates: list[tuple[ModelEntry, Provider]]
) -> Response:
    answer = await usable_answer(attempt, body, candidates, stream=True)
    entry, provider, response = answer.entry, answer.provider, answer.response
    return StreamingResponse(
        relay(attempt, entry, provider, response),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-lowrouter-provider": provider.name},
    )


async def relay(
    attempt: Attempt, entry: ModelEntry, provider: Provider, response: httpx.Response
) -> AsyncIterator[bytes]:
    """Pass chunks through as they come; end with our usage chunk (with cost) and [DONE]."""
    usage: tuple[int, int] | None = None
    produced = 0  # characters of generated text, for when the upstream never says its usage
    relayed = 0  # valid chunks passed on
    last_chunk: dict[str, Any] = {}
    outcome, status_code = "client_closed", 499
    settlement: Future[int | None] | None = None
    try:
        try:
            async for payloads in sse_data(response):
                out = []
                for payload in payloads:
                    try:
                        chunk = orjson.loads(payload)
                    except orjson.JSONDecodeError:
                        continue
                    if not isinstance(chunk, dict):
                        continue
                    usage = usage_counts(chunk.get("usage")) or usage
                    if not chunk.get("choices"):
                        continue  # the upstream's usage-only chunk: ours replaces it
                    produced += completion_text_length(chunk)
                    chunk["model"] = entry.id
                    chunk.pop("usage", None)
                    last_chunk = chunk
                    relayed += 1
                    out.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
                if out:  # what arrived together leaves together: one write, not one per event
                    yield b"".join(out)
            outcome, status_code = "ok", 200
        except httpx.HTTPError as error:
            outcome, status_code = "upstream_error", 502
            yield error_event(
                f"The upstream provider {provider.name} broke off the stream "
                f"({type(error).__name__}); you are charged for what was produced."
            )
        charge = True
        if relayed == 0 and usage is None:
            # Nothing valid came back (garbage, or an empty stream): an upstream failure.
            outcome, status_code, charge = "upstream_error", 502, False
            yield error_event(
                f"The upstream provider {provider.name} sent no valid completion chunks; "
                "you were not charged."
            )
        prompt, completion = usage or (attempt.prompt_estimate, estimate_text_tokens(produced))
        if not charge:
            prompt, completion = 0, 0
        settlement = attempt.settle(
            entry, provider, prompt, completion, outcome, status_code, charge=charge
        )
        charged = await durable(settlement)
        yield (
            b"data: "
            + orjson.dumps(
                {
                    "id": last_chunk.get("id", f"chatcmpl-{attempt.request_id}"),
                    "object": "chat.completion.chunk",
                    "created": last_chunk.get("created", int(time.time())),
                    "model": entry.id,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": prompt,
                        "completion_tokens": completion,
                        "total_tokens": prompt + completion,
                        "cost": format_credits(charged or 0),
                    },
                }
            )
            + b"\n\n"
        )
        yield b"data: [DONE]\n\n"
    finally:
        if settlement is None:
            # The client hung up (or we were cancelled) mid-stream: charge what was produced,
            # never nothing. A synchronous submit: no await can be cancelled here.
            prompt, completion = usage or (attempt.prompt_estimate, 0)
            completion = max(completion, estimate_text_tokens(produced), 1)
            attempt.settle(entry, provider, prompt, completion, outcome, status_code)
        with anyio.CancelScope(shield=True):
            await response.aclose()


async def sse_data(response: httpx.Response) -> AsyncIterator[list[bytes]]:
    """The `data:` payloads of a server-sent event stream, as they arrive: one list per network
    read, ending at `[DONE]` or at the end of the stream. Bytes all the way (no text decoding,
    splitting in C): this runs for every chunk of every stream."""
    pending = b""
    async for received in response.aiter_bytes():
        if b"\r" in received:  # CRLF or CR line ends (SSE allows both): make them LF
            received = received.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *lines, pending = (pending + received).split(b"\n")
        payloads, done = _payloads(lines)
        if payloads:
            yield payloads
        if done:
            return
    payloads, _ = _payloads([pending])
    if payloads:
        yield payloads


def _payloads(lines: list[bytes]) -> tuple[list[bytes], bool]:
    """The data payloads among these lines, and whether `[DONE]` was among them."""
    payloads: list[bytes] = []
    for line in lines:
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]":
            return payloads, True
        payloads.append(payload)
    return payloads, False


def error_event(message: str) -> bytes:
    return (
        b"data: "
        + orjson.dumps(
            {"error": {"message": message, "type": "api_error", "code": "upstream_stream_error"}}
        )
        + b"\n\n"
    )
