"""The inference key's other routes: GET /api/v1/models and GET /api/v1/key."""

from starlette.requests import Request
from starlette.responses import Response

from domain.ledger import meter_of
from domain.money import format_credits
from domain.tokens import TokenKind
from infrastructure.catalogue import AUTO_MODEL
from infrastructure.http.gateway import Gateway, durable
from infrastructure.http.jsonresponse import json_response
from infrastructure.views import iso, policy_json

CREATED = 1_767_225_600  # a fixed "created" for catalogue entries (2026-01-01)


async def list_models(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    key = await gateway.authenticate(request, TokenKind.INFERENCE)
    models = gateway.catalogue.allowed_models(key.scope)
    data = [
        {
            "id": entry.id,
            "object": "model",
            "created": CREATED,
            "owned_by": "lowrouter-demo" if entry.demo else entry.id.split("/", 1)[0],
            "kind": entry.kind,
            "pricing": {
                "prompt_per_million": format_credits(entry.prompt_price),
                "completion_per_million": format_credits(entry.completion_price),
                "cached_prompt_per_million": format_credits(entry.prices.cache_read_price),
                "cache_write_per_million": format_credits(entry.prices.cache_write_price),
            },
            "max_output_tokens": entry.max_output_tokens,
            "providers": [
                p
                for p in entry.providers
                if key.scope.region is None
                or gateway.catalogue.providers[p].region == key.scope.region
            ],
            **(
                {"demo": True, "description": "DEMO: echoes your message back; not a real model"}
                if entry.demo
                else {}
            ),
        }
        for entry in models
    ]
    if data:
        data.insert(
            0,
            {
                "id": AUTO_MODEL,
                "object": "model",
                "created": CREATED,
                "owned_by": "lowrouter",
                "description": "Routes to the cheapest model this key may use, with fallback.",
            },
        )
    return json_response({"object": "list", "data": data})


async def this_key(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    key = await gateway.authenticate(request, TokenKind.INFERENCE)
    page = await durable(gateway.spend.view(key.account_id))
    key_id = str(key.key_id)
    figures = page.limits_of(meter_of(key.key_id, key.lineage_id))  # the lineage's figures
    spent, held = figures.spent_today, figures.held_today
    limit = key.scope.daily_limit
    remaining = figures.remaining_today(limit)
    now = gateway.clock()
    return json_response(
        {
            "id": key_id,
            "name": key.name,
            "display": key.display,
            "status": key.status_at(now),
            "scope": {
                "models": list(key.scope.models) if key.scope.models is not None else None,
                "region": key.scope.region,
                "daily_limit": format_credits(limit) if limit is not None else None,
            },
            "daily_limit": format_credits(limit) if limit is not None else None,
            "spent_today": format_credits(spent),
            "held_today": format_credits(held),
            "remaining_today": format_credits(remaining) if remaining is not None else None,
            "account_balance": format_credits(page.balance),
            "account_available": format_credits(page.available),
            "limit_resets_at": iso(gateway.next_reset()),
            "grace_deadline": iso(key.grace_deadline),
            **policy_json(key.policy),
            "spent_this_month": format_credits(figures.spent_month),
        }
    )
