"""The per-process state of the HTTP app: runtime, catalogue, upstream; and the steps every
route shares (authenticate, read a bounded body, route a model)."""

import asyncio
import math
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from starlette.requests import Request

from application.clock import Clock, next_midnight
from application.spend import SpendControl
from domain.scope import Scope
from domain.tokens import TokenKind
from infrastructure.catalogue import (
    Catalogue,
    ModelEntry,
    ModelNotAllowed,
    ModelNotFound,
    NoModelAvailable,
    Provider,
    RegionUnavailable,
)
from infrastructure.http.auth import (
    Network,
    admitted,
    client_address,
    presented_token,
    refused_use,
    trusted_networks,
)
from infrastructure.http.errors import ApiError
from infrastructure.observability.context import note_key
from infrastructure.runtime import Runtime
from infrastructure.upstream import Upstream
from projections.lookup import GroupLookup, KeyRecord

T = TypeVar("T")

# Recording a use of a revoked key writes an event: off the event loop, on threads of its own.
REFUSED_USE_THREADS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="lowrouter-refused-use")


async def durable(future: "Future[T]") -> T:
    """Wait for a ledger command (or a lookup) without ever cancelling it: a client that hangs up
    must not stop a reservation or a settlement half way (the writer completes it either way).

    What asyncio.shield(asyncio.wrap_future(f)) does, with one loop future instead of three: the
    thread that resolves `future` hands its outcome to the loop; cancelling the waiting task
    cancels only the waiter.
    """
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[T] = loop.create_future()

    def from_the_writer(done: "Future[T]") -> None:
        if not loop.is_closed():  # the server has already stopped: nobody to tell
            loop.call_soon_threadsafe(_hand_over, done, waiter)

    future.add_done_callback(from_the_writer)
    return await waiter


def _hand_over(done: "Future[T]", waiter: "asyncio.Future[T]") -> None:
    if waiter.done():  # the waiting task was cancelled: nobody to tell
        return
    if done.cancelled():
        waiter.cancel()
    elif (error := done.exception()) is not None:
        waiter.set_exception(error)
    else:
        waiter.set_result(done.result())


@dataclass
class Gateway:
    runtime: Runtime
    catalogue: Catalogue
    upstream: Upstream
    lookups: GroupLookup
    clock: Clock
    max_body_bytes: int
    trusted_proxies: tuple[Network, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.trusted_proxies:
            self.trusted_proxies = trusted_networks(self.runtime.settings.trusted_proxies)

    @property
    def spend(self) -> SpendControl:
        return self.runtime.spend

    def client_ip(self, request: Request) -> str | None:
        """The caller's address (the TCP peer, or what trusted proxies forwarded)."""
        peer = request.client.host if request.client else None
        return client_address(
            peer, request.headers.getlist("x-forwarded-for"), self.trusted_proxies
        )

    def lookup_trouble(self) -> str | None:
        """Why the key lookup cannot be trusted to judge access now, or None: this process's
        runner stopped following the log, or a failure any process recorded (seen by the lookup
        thread, at most GroupLookup.HEALTH_EVERY old). The one condition for the gateway, the
        dashboard and the health route."""
        runner = self.runtime.projections
        if runner.stopped_unexpectedly:
            return str(runner.failure or "the projection runner's thread stopped")
        return self.lookups.unavailable or None

    async def authenticate(self, request: Request, kind: TokenKind) -> KeyRecord:
        """The key behind the request's bearer token, read from the lookup on every request."""
        token, token_hash = presented_token(
            request.headers.get("authorization"), self.runtime.settings.pepper, kind
        )
        record = await durable(self.lookups.find(token_hash))
        if self.lookup_trouble() is not None:
            # Never judge access from a lookup that has stopped following the log (this
            # process's runner, or a failure any process recorded, seen by the lookup thread
            # before the read that answered this request).
            raise ApiError(
                503,
                "lookup_unavailable",
                "The gateway's key lookup has stopped; refusing requests rather than serving "
                "stale access. The operator must check `lowrouter projections status`.",
            )
        now = self.clock()
        client_ip = self.client_ip(request)
        request.state.client_ip = client_ip
        if record is not None:
            note_key(record.display, record.account_id, client_ip)
        inference = record is not None and record.kind == TokenKind.INFERENCE.code
        if record is not None and inference and refused_use(record, now):
            user_agent = request.headers.get("user-agent")
            await asyncio.get_running_loop().run_in_executor(
                REFUSED_USE_THREADS,
                self.runtime.ledger.record_use_after_revocation,
                record.key_id,
                client_ip,
                user_agent,
            )
        return admitted(record, token, now, client_ip)

    async def read_body(self, request: Request) -> bytes:
        limit = self.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large(limit)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            chunks.append(chunk)
        return b"".join(chunks)

    def route(self, model_id: str, scope: Scope) -> list[tuple[ModelEntry, Provider]]:
        try:
            return self.catalogue.candidates(model_id, scope)
        except ModelNotFound as error:
            raise ApiError(404, "model_not_found", str(error), param="model") from None
        except ModelNotAllowed as error:
            raise ApiError(403, "model_not_allowed", str(error), param="model") from None
        except RegionUnavailable as error:
            raise ApiError(403, "region_unavailable", str(error), param="model") from None
        except NoModelAvailable as error:
            raise ApiError(403, "no_model_available", str(error), param="model") from None

    def next_reset(self) -> datetime:
        return next_midnight(self.clock())

    def seconds_until(self, moment: datetime) -> int:
        return max(1, math.ceil((moment - self.clock()).total_seconds()))


def too_large(limit: int) -> ApiError:
    return ApiError(
        413, "request_too_large", f"The request body is larger than the limit of {limit} bytes."
    )
