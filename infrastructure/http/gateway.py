"""The per-process state of the HTTP app: runtime, catalogue, upstream, metering; and the steps
every route shares (authenticate, read a bounded body)."""

import asyncio
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from starlette.requests import Request

from application.clock import Clock, next_midnight
from application.durable import durable
from application.metering import Metering
from application.retry import StoreUnavailable
from application.spend import SpendControl
from domain.throttle import FailureThrottle
from domain.tokens import TokenKind
from infrastructure.catalogue import Catalogue
from infrastructure.http.auth import (
    Network,
    admitted,
    client_address,
    presented_token,
    refused_use,
    trusted_networks,
)
from infrastructure.http.errors import ApiError
from infrastructure.http.limits import parse_json, too_large
from infrastructure.key_uses import KeyUses
from infrastructure.observability.context import note_key
from infrastructure.runtime import Runtime
from infrastructure.upstream import Upstream
from projections.lookup import GroupLookup, KeyRecord

# Recording a use of a revoked key writes an event: off the event loop, on threads of its own.
REFUSED_USE_THREADS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="lowrouter-refused-use")


@dataclass
class Gateway:
    runtime: Runtime
    catalogue: Catalogue
    upstream: Upstream
    lookups: GroupLookup
    clock: Clock
    max_body_bytes: int
    metering: Metering
    trusted_proxies: tuple[Network, ...] = field(default=())
    throttle: FailureThrottle = field(default_factory=FailureThrottle)
    key_uses: KeyUses | None = None  # management keys' last use (infrastructure.key_uses)

    def __post_init__(self) -> None:
        settings = self.runtime.settings
        if not self.trusted_proxies:
            self.trusted_proxies = trusted_networks(settings.trusted_proxies)
        self.throttle = FailureThrottle(settings.auth_failure_burst, ban=settings.auth_ban_seconds)
        self.key_uses = KeyUses(self.runtime.engine, REFUSED_USE_THREADS)

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

    async def authenticate(
        self, request: Request, kind: TokenKind, authorization: str | None = None
    ) -> KeyRecord:
        """The key behind the request's bearer token (or the `authorization` value given, e.g.
        built from Anthropic's `x-api-key`), read from the lookup on every request."""
        client_ip = self.client_ip(request)
        request.state.client_ip = client_ip
        address, moment = client_ip or "", time.monotonic()
        banned = self.throttle.banned_for(address, moment)
        if banned is not None:
            raise ApiError(
                429,
                "auth_throttled",
                "Too many failed authentications from your address: try again in "
                f"{math.ceil(banned)} s.",
                headers={"retry-after": str(math.ceil(banned))},
            )
        try:
            return await self._authenticate(request, kind, authorization, client_ip)
        except ApiError as error:
            if error.status == 401:  # a bad, unknown or dead key: one more failure
                self.throttle.failed(address, moment)
            raise

    async def _authenticate(
        self, request: Request, kind: TokenKind, authorization: str | None, client_ip: str | None
    ) -> KeyRecord:
        header = authorization or request.headers.get("authorization")
        token, token_hash = presented_token(header, self.runtime.settings.pepper, kind)
        try:
            wait = self.runtime.settings.store_wait_seconds
            record = await durable(self.lookups.find(token_hash), within=wait)
        except TimeoutError:
            raise StoreUnavailable("the key lookup did not answer in time") from None
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
        if record is not None:
            note_key(record.display, record.account_id, client_ip)
        inference = record is not None and record.kind is TokenKind.INFERENCE
        if record is not None and inference and refused_use(record, now):
            user_agent = request.headers.get("user-agent")
            await asyncio.get_running_loop().run_in_executor(
                REFUSED_USE_THREADS,
                self.runtime.app.record_use_after_revocation,
                record.key_id,
                client_ip,
                user_agent,
            )
        key = admitted(record, token, now, client_ip)
        if key.kind is TokenKind.MANAGEMENT and self.key_uses is not None:
            self.key_uses.seen(key.key_id, now)  # at most once a minute: off the event loop
        return key

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

    async def read_json(self, request: Request) -> Any:
        """The bounded body, parsed (off the event loop when large; depth-limited)."""
        return await parse_json(await self.read_body(request))

    def next_reset(self) -> datetime:
        return next_midnight(self.clock())

    def seconds_until(self, moment: datetime) -> int:
        return max(1, math.ceil((moment - self.clock()).total_seconds()))
