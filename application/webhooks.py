"""The webhook use cases: subscribe an account's endpoint, remove it.

The secret is made here, handed to the caller once, and kept only in the vault (encrypted, so
deliveries can be signed); it is never part of an event. Whether a URL's host may be called
(no private or loopback targets unless allowed) is the network's answer, given as `check_target`.
"""

import base64
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import Recording

from application.app import Lowrouter
from application.retry import retry_on_conflict
from domain.actor import Actor
from domain.errors import NotFound
from domain.webhooks import WebhookEndpoint, check_event_types, check_url

SECRET_BYTES = 32


class SecretVault(Protocol):
    def store(self, endpoint_id: UUID, secret: str) -> None: ...

    def delete(self, endpoint_id: UUID) -> None: ...


def new_secret() -> str:
    """`whsec_` and 32 random bytes in base64, the Standard Webhooks form."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


@dataclass(frozen=True)
class AddedWebhook:
    endpoint: WebhookEndpoint
    secret: str  # shown once


class Webhooks:
    def __init__(
        self,
        app: Lowrouter,
        vault: SecretVault,
        check_target: Callable[[str], None],
        barrier: Callable[[int], None],
    ) -> None:
        self.app = app
        self.vault = vault
        self.check_target = check_target  # raises InvalidWebhook for a refused host
        self.barrier = barrier  # returns once the outbox projection has seen a position

    def add(
        self, account_id: UUID, url: str, events: Iterable[object], actor: Actor
    ) -> AddedWebhook:
        url = check_url(url)
        types = check_event_types(events)
        self.app.get_account(account_id)  # NotFound for an unknown account
        self.check_target(url)
        endpoint_id, secret = uuid4(), new_secret()
        self.vault.store(endpoint_id, secret)  # first: an endpoint never exists without it
        endpoint = WebhookEndpoint.add(endpoint_id, account_id, url, types, actor, self.app.clock())
        self._wait(self.app.save(endpoint))
        return AddedWebhook(endpoint, secret)

    def get(self, endpoint_id: UUID, account_id: UUID | None = None) -> WebhookEndpoint:
        """An endpoint by id; one of another account is reported as missing."""
        try:
            endpoint: object = self.app.repository.get(endpoint_id)
        except AggregateNotFoundError:
            raise NotFound(f"no webhook {endpoint_id}") from None
        if not isinstance(endpoint, WebhookEndpoint) or (
            account_id is not None and endpoint.account_id != account_id
        ):
            raise NotFound(f"no webhook {endpoint_id}")
        return endpoint

    def remove(
        self, endpoint_id: UUID, actor: Actor, account_id: UUID | None = None
    ) -> WebhookEndpoint:
        def command() -> tuple[WebhookEndpoint, list[Recording[UUID]]]:
            endpoint = self.get(endpoint_id, account_id)
            endpoint.remove(actor, self.app.clock())
            return endpoint, self.app.save(endpoint)

        endpoint, recordings = retry_on_conflict(command)
        self.vault.delete(endpoint_id)  # nothing is signed for it any more: erase the secret
        self._wait(recordings)
        return endpoint

    def _wait(self, recordings: Sequence[Recording[UUID]]) -> None:
        if recordings:
            self.barrier(max(r.notification.id for r in recordings))
