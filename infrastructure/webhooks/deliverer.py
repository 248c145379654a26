"""The deliverer: sends the outbox's messages (projections/webhooks.py), signed, and retries.

It runs in the background process beside the projections and the reconciler, on an asyncio
loop of its own thread, so neither a slow endpoint nor a burst of messages touches the gateway's
request loops or the ledger; like them, it works only while its process leads (one background
runner per database: infrastructure.leadership) and stands by otherwise. Each endpoint has at
most PER_ENDPOINT messages in flight and each attempt a short timeout, so one slow endpoint
holds up only its own messages.

At least once, never invented: a message is claimed with a lease in the database before it is
sent; a deliverer that dies mid-send leaves the lease to expire and another (or the restarted
one) sends it again, with the same `webhook-id`. Redirects are not followed (3xx is a failure);
2xx is delivered; anything else is retried on the schedule of domain.webhooks.RETRY_SCHEDULE,
each wait jittered, until the schedule ends and the message is given up. Signatures are made by
the `standardwebhooks` library: `webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>`.
Ordering per endpoint is not promised: retries and parallel sends can overtake each other.
"""

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp.abc import ResolveResult
from aiohttp.resolver import ThreadedResolver
from sqlalchemy import Engine, insert, or_, select, update
from standardwebhooks.webhooks import Webhook

from domain.redaction import safe_error_text
from domain.webhooks import RETRY_SCHEDULE, retry_delay
from infrastructure.webhooks.targets import TargetRefused, check_target, is_public
from infrastructure.webhooks.vault import SecretMissing, SecretVault
from projections.webhooks import (
    attempts,
    delivery_state,
    drop_messages,
    due_messages,
    import_new_messages,
)

log = logging.getLogger("lowrouter.webhooks")

PER_ENDPOINT = 4  # messages in flight per endpoint
CONCURRENCY = 64  # messages in flight in all
BATCH = 200
USER_AGENT = "lowrouter-webhooks"
MAX_ERROR = 300


@dataclass(frozen=True)
class DeliveryConfig:
    timeout: float = 5.0  # seconds per attempt, connecting included
    schedule: Sequence[float] = RETRY_SCHEDULE
    allow_private: bool = False
    poll_interval: float = 0.5

    @property
    def lease(self) -> float:
        """How long a claimed message is left to its deliverer before another may send it."""
        return 2 * self.timeout + 1


class _GuardedResolver(ThreadedResolver):
    """Resolves a webhook host and drops every address webhooks may not call, so the connection
    goes to an address that was checked (no second lookup that could answer differently)."""

    def __init__(self, allow_private: bool) -> None:
        super().__init__()
        self.allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await super().resolve(host, port, family)
        allowed = [r for r in results if self.allow_private or is_public(r["host"])]
        if not allowed:
            raise OSError(f"{host} resolves only to addresses webhooks may not call")
        return allowed


def _now_us() -> int:
    return time.time_ns() // 1000


class Deliverer:
    def __init__(
        self,
        engine: Engine,
        vault: SecretVault,
        config: DeliveryConfig = DeliveryConfig(),
        now_us: Callable[[], int] = _now_us,
        leading: Callable[[], bool] = lambda: True,
    ) -> None:
        self.engine = engine
        self.leading = leading
        self.vault = vault
        self.config = config
        self.now_us = now_us
        self._in_flight: dict[str, int] = {}  # endpoint -> messages being sent
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    # Running in the background ------------------------------------------------------------

    def start(self) -> "Deliverer":
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._run()), name="lowrouter-webhooks", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._wake is not None:  # end the pause between passes now, not at its end
            loop, wake = self._wake
            with contextlib.suppress(RuntimeError):  # the loop has already ended
                loop.call_soon_threadsafe(wake.set)
        if self._thread is not None:
            self._thread.join(timeout=self.config.timeout + 5)
            self._thread = None

    async def _run(self) -> None:
        wake = asyncio.Event()
        self._wake = (asyncio.get_running_loop(), wake)
        async with self.session() as session:
            while not self._stop.is_set():
                try:
                    await self.deliver_pass(session)
                except Exception as error:  # a database hiccup: try again on the next pass
                    log.error("webhook delivery pass failed: %s", safe_error_text(error))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self.config.poll_interval)
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=self.config.timeout + 1)

    def session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=CONCURRENCY,
            limit_per_host=PER_ENDPOINT,
            resolver=_GuardedResolver(self.config.allow_private),
        )
        return aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.config.timeout),
            headers={"user-agent": USER_AGENT},
        )

    # One pass -----------------------------------------------------------------------------

    async def deliver_pass(self, session: aiohttp.ClientSession) -> int:
        """One pass of the background loop: send what is due if this process leads. (Several
        deliverers at once would still send each message once per attempt, by its lease; one
        leader keeps the database work and the outgoing connections in one process.)"""
        if not self.leading():
            return 0
        return await self.send_due(session)

    async def send_due(self, session: aiohttp.ClientSession) -> int:
        """Claim what is due and start sending it; returns how many sends were started."""
        busy = [e for e, n in self._in_flight.items() if n >= PER_ENDPOINT]
        room = CONCURRENCY - sum(self._in_flight.values())
        if room <= 0:
            return 0
        await asyncio.to_thread(import_new_messages, self.engine)
        rows = await asyncio.to_thread(
            due_messages, self.engine, self.now_us(), min(BATCH, room), busy
        )
        unowed = [row.message_id for row in rows if row.withdrawn or row.removed_us is not None]
        await asyncio.to_thread(drop_messages, self.engine, unowed)
        started = 0
        for row in rows:
            if row.message_id in unowed:
                continue
            if self._in_flight.get(row.endpoint_id, 0) >= PER_ENDPOINT:
                continue
            if not await asyncio.to_thread(self.claim, row.message_id):
                continue
            self._in_flight[row.endpoint_id] = self._in_flight.get(row.endpoint_id, 0) + 1
            task = asyncio.create_task(self._send(session, row))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            started += 1
        return started

    async def wait_idle(self) -> None:
        """Until every started send has finished (tests, and stop())."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    def claim(self, message_id: str) -> bool:
        """Lease the message to this deliverer, unless another has it or it is not due."""
        now = self.now_us()
        lease_until = now + int(self.config.lease * 1_000_000)
        state = delivery_state
        with self.engine.begin() as conn:
            claimed = conn.execute(
                update(state)
                .where(
                    state.c.message_id == message_id,
                    state.c.pending.is_(True),
                    state.c.next_attempt_us <= now,
                    or_(state.c.lease_until_us.is_(None), state.c.lease_until_us < now),
                )
                .values(lease_until_us=lease_until)
            ).rowcount
            return bool(claimed)

    async def _send(self, session: aiohttp.ClientSession, row: Any) -> None:
        try:
            status, error = await self._post(session, row)
            await asyncio.to_thread(self.record, row.message_id, row.endpoint_id, status, error)
        except Exception as error:
            log.error(
                "recording a webhook attempt failed; the lease will expire: %s",
                safe_error_text(error),
            )
        finally:
            self._in_flight[row.endpoint_id] -= 1
            if not self._in_flight[row.endpoint_id]:
                del self._in_flight[row.endpoint_id]

    async def _post(
        self, session: aiohttp.ClientSession, row: Any
    ) -> tuple[int | None, str | None]:
        """One attempt: (status code or None, error or None)."""
        try:
            secret = await asyncio.to_thread(self.vault.load, row.endpoint_id)
            await asyncio.to_thread(check_target, row.url, self.config.allow_private)
        except (SecretMissing, TargetRefused) as error:
            return None, str(error)[:MAX_ERROR]
        headers = signed_headers(secret, row.message_id, row.body, datetime.now(UTC))
        try:
            async with session.post(
                row.url, data=row.body.encode(), headers=headers, allow_redirects=False
            ) as response:
                return response.status, None if response.status < 300 else response.reason
        except TimeoutError:
            return None, f"no answer within {self.config.timeout:g} s"
        except aiohttp.ClientError as error:
            return None, f"{type(error).__name__}: {error}"[:MAX_ERROR]
        except OSError as error:
            return None, f"{type(error).__name__}: {error}"[:MAX_ERROR]

    def record(
        self, message_id: str, endpoint_id: str, status: int | None, error: str | None
    ) -> None:
        """Write the attempt and what comes next: delivered, a retry at a time, or given up."""
        now = self.now_us()
        delivered = status is not None and 200 <= status < 300
        state = delivery_state
        with self.engine.begin() as conn:
            made = (
                1
                + conn.execute(
                    select(state.c.attempts).where(state.c.message_id == message_id)
                ).scalar_one()
            )
            delay = None if delivered else retry_delay(made, self.config.schedule)
            next_us = None if delay is None else now + int(delay * 1_000_000)
            conn.execute(
                update(state)
                .where(state.c.message_id == message_id)
                .values(
                    attempts=made,
                    lease_until_us=None,
                    delivered_us=now if delivered else None,
                    next_attempt_us=next_us if next_us is not None else now,
                    gave_up=not delivered and next_us is None,
                    pending=not delivered and next_us is not None,
                )
            )
            conn.execute(
                insert(attempts).values(
                    message_id=message_id,
                    attempt=made,
                    endpoint_id=endpoint_id,
                    at_us=now,
                    status_code=status,
                    error=error,
                    delivered=delivered,
                    next_attempt_us=next_us,
                )
            )


def signed_headers(secret: str, message_id: str, body: str, at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers for one attempt (a fresh timestamp, the same id)."""
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, at, body),
    }
