"""The OpenAPI paths of the webhook and secret-scanning routes (merged into openapi.DOCUMENT)."""

from typing import Any

WEBHOOK = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "url": {"type": "string"},
        "events": {"type": "array", "items": {"type": "string"}},
        "created_at": {"type": "string"},
    },
}
DELIVERY = {
    "type": "object",
    "properties": {
        "event_id": {"type": "string", "description": "the webhook-id of every attempt"},
        "type": {"type": "string"},
        "attempt": {"type": "integer", "description": "0: not attempted yet"},
        "status_code": {"type": "integer", "nullable": True},
        "attempted_at": {"type": "string", "nullable": True},
        "delivered_at": {"type": "string", "nullable": True},
        "next_attempt_at": {"type": "string", "nullable": True},
        "error": {"type": "string", "nullable": True},
    },
}
GITHUB_SIGNATURE = "githubSignature"
GITHUB_SCHEME = {
    "type": "apiKey",
    "in": "header",
    "name": "Github-Public-Key-Signature",
    "description": "ECDSA P-256 signature of the body by one of GitHub's published keys",
}
WEBHOOK_ID = [{"name": "webhook_id", "in": "path", "required": True, "schema": {"type": "string"}}]


def webhook_paths(op: Any, obj: Any, management: str) -> dict[str, Any]:
    """Built with openapi's own helpers (`_op`, `_object`), passed in to avoid a cycle."""
    return {
        "/api/v1/webhooks": {
            "get": op(
                "The account's webhook endpoints (never a secret)",
                obj({"data": {"type": "array", "items": WEBHOOK}}),
                security=management,
            ),
            "post": op(
                "Subscribe a URL to event types; the only response that carries the secret",
                obj({"secret": {"type": "string", "example": "whsec_…"}, "data": WEBHOOK}),
                security=management,
                body=obj(
                    {"url": {"type": "string"}, "events": {"type": "array"}}, ["url", "events"]
                ),
                status="201",
            ),
        },
        "/api/v1/webhooks/{webhook_id}": {
            "delete": op(
                "Remove an endpoint: nothing more is sent to it, its secret is erased",
                WEBHOOK,
                security=management,
                parameters=WEBHOOK_ID,
            )
        },
        "/api/v1/webhooks/{webhook_id}/deliveries": {
            "get": op(
                "The endpoint's deliveries, newest first, one row per attempt",
                obj({"data": {"type": "array", "items": DELIVERY}}),
                security=management,
                parameters=WEBHOOK_ID,
            )
        },
        "/api/v1/secret-scanning/github": {
            "post": {
                "summary": "GitHub secret-scanning partner reports, signed with ECDSA "
                "(Github-Public-Key-Identifier, Github-Public-Key-Signature)",
                "security": [{GITHUB_SIGNATURE: []}],
                "requestBody": {"required": True, "content": {"application/json": {}}},
                "responses": {"200": {"description": "token_raw, token_type, label per token"}},
            }
        },
    }
