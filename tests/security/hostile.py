"""A hostile OpenAI-compatible upstream (it answers whatever a test sets) and a gateway facing
it, for issue 15's attacks on the read side and on what is relayed.

    with hostile_gateway(tmp_path, database_url) as (gateway, upstream):
        upstream.answer = {"usage": {"prompt_tokens": 1, "completion_tokens": 2**63}, ...}
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from domain.actor import Actor
from domain.scope import Scope
from infrastructure.catalogue import load_catalogue
from infrastructure.http.app import create_app
from infrastructure.runtime import Runtime, open_runtime
from infrastructure.settings import load_settings
from tests.support.servers import LiveServer
from tests.support.stores import PEPPER

OPERATOR = Actor("operator", "cli:hostile-tests")
UPSTREAM_SECRET = "sk-proj-UPSTREAMsecretCREDENTIAL0123456789abcdef"
API_KEY_ENV = "LOWROUTER_HOSTILE_UPSTREAM_KEY"


def completion(usage: Any, text: str = "ok") -> dict[str, Any]:
    return {
        "id": "chatcmpl-hostile",
        "object": "chat.completion",
        "created": 0,
        "model": "hostile",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": usage,
    }


@dataclass
class HostileUpstream:
    status: int = 200
    answer: Any = field(
        default_factory=lambda: completion({"prompt_tokens": 1, "completion_tokens": 1})
    )
    raw: bytes | None = None  # sent as is instead of `answer` when set
    received: list[Any] = field(default_factory=list)
    base_url: str = ""

    def app(self) -> Starlette:
        async def chat(request: Request) -> Response:
            self.received.append(orjson.loads(await request.body()))
            body = self.raw if self.raw is not None else orjson.dumps(self.answer)
            return Response(body, status_code=self.status, media_type="application/json")

        return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


@dataclass
class Gateway:
    url: str
    runtime: Runtime

    @property
    def api(self) -> str:
        return self.url + "/api/v1"

    def account(self, name: str, credits: int = 100_000_000) -> tuple[UUID, str, str]:
        """A funded account: (id, management token, inference token)."""
        opened = self.runtime.app.open_account(name, OPERATOR, credits)
        key = self.runtime.app.create_key(opened.account.id, "k", Scope(), OPERATOR)
        return opened.account.id, opened.token.value, key.token.value


@contextmanager
def hostile_gateway(
    tmp_path: Path, database_url: str, env: dict[str, str] | None = None, provider_lines: str = ""
) -> Iterator[tuple[Gateway, HostileUpstream]]:
    """`provider_lines`: more TOML for the provider (e.g. `extra_fields = ["top_k"]`)."""
    upstream = HostileUpstream()
    with LiveServer(upstream.app(), name="hostile-upstream") as upstream_url:
        upstream.base_url = upstream_url + "/v1"
        catalogue = tmp_path / "hostile.toml"
        catalogue.write_text(
            f"""
[providers."hostile"]
base_url = "{upstream.base_url}"
api_key_env = "{API_KEY_ENV}"
region = "us"
{provider_lines}

[models."hostile/model"]
provider = "hostile"
upstream_model = "hostile"
prompt_price_per_million = "1.00"
completion_price_per_million = "2.00"
max_output_tokens = 1000
""",
            encoding="utf-8",
        )
        settings = load_settings(
            {"LOWROUTER_TOKEN_PEPPER": PEPPER, "LOWROUTER_DATA_DIR": str(tmp_path), **(env or {})},
            database_url=database_url,
        )
        runtime = open_runtime(settings)
        app = create_app(runtime, load_catalogue(catalogue, {API_KEY_ENV: UPSTREAM_SECRET}))
        with LiveServer(app, name="gateway") as url:
            yield Gateway(url, runtime), upstream
