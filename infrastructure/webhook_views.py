"""The webhook shapes of API.md (WEBHOOK, a delivery row) for the API, CLI and dashboard."""

from typing import Any

from domain.webhooks import WebhookEndpoint
from infrastructure.views import iso
from projections.webhooks import DeliveryRow, EndpointView


def webhook_json(endpoint: WebhookEndpoint | EndpointView) -> dict[str, Any]:
    """WEBHOOK = {id, url, events, created_at}."""
    if isinstance(endpoint, EndpointView):
        return {
            "id": endpoint.id,
            "url": endpoint.url,
            "events": endpoint.events,
            "created_at": iso(endpoint.created_at),
        }
    return {
        "id": str(endpoint.id),
        "url": endpoint.url,
        "events": list(endpoint.events),
        "created_at": iso(endpoint.created_on),
        **({"removed_at": iso(endpoint.removed_at)} if endpoint.removed_at else {}),
    }


def delivery_json(row: DeliveryRow) -> dict[str, Any]:
    return {
        "event_id": row.event_id,
        "type": row.type,
        "attempt": row.attempt,
        "status_code": row.status_code,
        "attempted_at": iso(row.attempted_at),
        "delivered_at": iso(row.delivered_at),
        "next_attempt_at": iso(row.next_attempt_at),
        "error": row.error,
    }
