"""Webhook endpoints and the rules of what they are told.

An endpoint is an aggregate of its own (one short stream: Added, Removed): an account's URL and
the event types it subscribes to. What is sent, and when, is decided from the event log by the
outbox projection (projections/webhooks.py); the rules it applies live here, pure:

- which event types exist;
- `budget.threshold`: a key passed 50, 80 or 100 % of its daily (or monthly) limit;
- `credits.low`: an account's available credits fell below 10 % of its last funding;
- the retry schedule: exponential backoff with jitter, bounded.

The signing secret is not part of any event (the log is immutable, so it could never be erased):
it is kept encrypted beside the log and deleted when the endpoint is removed.
"""

import random
from collections.abc import Iterable, Sequence
from datetime import datetime
from urllib.parse import urlsplit
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.actor import Actor, ActorFields
from domain.errors import DomainError

EVENT_TYPES = (
    "key.created",
    "key.updated",
    "key.rotated",
    "key.revoked",
    "key.leaked",
    "key.expiring",
    "budget.threshold",
    "credits.low",
    "usage.unexpected",
)
MAX_URL_LENGTH = 2000
THRESHOLDS = (50, 80, 100)  # percent of a key's daily or monthly limit
LOW_CREDITS_PERCENT = 10  # of the account's last funding
EXPIRING_NOTICE_DAYS = 7

# Seconds to wait before each retry (the first attempt is immediate): Standard Webhooks' own
# suggestion, about 27 hours in all. Each wait is jittered by ±20 % so that an endpoint coming
# back is not hit by every message at once; after the last one the message is given up.
RETRY_SCHEDULE: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
JITTER = 0.2


class InvalidWebhook(DomainError, ValueError):
    """A webhook URL or event list that cannot be subscribed."""


class WebhookRemoved(DomainError):
    """The endpoint was already removed."""


def check_url(url: str) -> str:
    """An absolute http(s) URL with a host and no credentials (they would be sent in clear in
    every log that shows the URL). Whether its host is allowed is the network's question."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidWebhook("the webhook url is required")
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise InvalidWebhook(f"the webhook url is longer than {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise InvalidWebhook("the webhook url contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a malformed port
    except ValueError:
        raise InvalidWebhook("the webhook url is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidWebhook("the webhook url must start with https:// (or http://)")
    if not parts.hostname:
        raise InvalidWebhook("the webhook url has no host")
    if parts.username is not None or parts.password is not None:
        raise InvalidWebhook("the webhook url must not contain a user name or password")
    return url


def check_event_types(types: Iterable[object]) -> tuple[str, ...]:
    """The subscribed types, known and without repeats, in the order given."""
    chosen: list[str] = []
    for name in types:
        if not isinstance(name, str) or name not in EVENT_TYPES:
            known = ", ".join(EVENT_TYPES)
            raise InvalidWebhook(f"{str(name)[:60]!r} is not a webhook event type ({known})")
        if name not in chosen:
            chosen.append(name)
    if not chosen:
        raise InvalidWebhook("subscribe the webhook to at least one event type")
    return tuple(chosen)


class WebhookEndpoint(Aggregate):
    class Added(Aggregate.Created):
        account_id: UUID
        url: str
        events: list[str]
        actor: ActorFields

    class Removed(Aggregate.Event):
        actor: ActorFields

        def apply(self, endpoint: "WebhookEndpoint") -> None:
            endpoint.removed_at = self.timestamp

    def __init__(self, account_id: UUID, url: str, events: list[str], actor: ActorFields):
        self.account_id = account_id
        self.url = url
        self.events = list(events)
        self.removed_at: datetime | None = None

    @classmethod
    def add(
        cls,
        endpoint_id: UUID,
        account_id: UUID,
        url: str,
        events: Iterable[object],
        actor: Actor,
        at: datetime,
    ) -> "WebhookEndpoint":
        return cls._create(
            cls.Added,
            id=endpoint_id,
            account_id=account_id,
            url=check_url(url),
            events=list(check_event_types(events)),
            actor=actor.as_dict(),
            timestamp=at,
        )

    def remove(self, actor: Actor, at: datetime) -> None:
        if self.removed_at is not None:
            raise WebhookRemoved("this webhook was already removed")
        self.trigger_event(self.Removed, actor=actor.as_dict(), timestamp=at)


# What is sent -----------------------------------------------------------------------------------


def thresholds_reached(spent: int, limit: int | None, already: Iterable[int]) -> list[int]:
    """The thresholds (percent) that `spent` has reached against `limit` and that were not
    reached before. Exact: integer arithmetic on micro-credits."""
    if not limit or limit <= 0:
        return []
    done = set(already)
    return [pct for pct in THRESHOLDS if pct not in done and spent * 100 >= limit * pct]


def credits_low(available: int, last_funding: int) -> bool:
    """Available credits (balance minus holds) under 10 % of the last funding."""
    return last_funding > 0 and available * 100 < last_funding * LOW_CREDITS_PERCENT


def retry_delay(
    attempts_made: int,
    schedule: Sequence[float] = RETRY_SCHEDULE,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds to wait after `attempts_made` failed attempts, or None: give up."""
    if attempts_made < 1 or attempts_made > len(schedule):
        return None
    base = schedule[attempts_made - 1]
    spread = (rng or random).uniform(-JITTER, JITTER)
    return max(0.0, base * (1 + spread))
