"""Dashboard fixtures: the app from `create_app` with the dashboard installed, on SQLite and
PostgreSQL (the `settings` fixture follows `database_url`), driven through TestClient "browsers"
that keep their own cookies, like separate browser profiles."""

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

import httpx
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from domain.actor import Actor
from domain.money import parse_credits, parse_price_per_million
from domain.scope import Scope
from domain.usage import Api, Usage
from infrastructure.catalogue import Catalogue, ModelEntry, Provider, demo_catalogue
from infrastructure.http.app import create_app
from infrastructure.http.dashboard import COOKIE, install_dashboard
from infrastructure.runtime import Runtime, open_runtime
from infrastructure.settings import Settings

OPERATOR = Actor("operator", "cli:dashboard-tests")
START = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


class Clock:
    """A clock the test moves by hand; the ledger and the gateway both read it."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def two_region_catalogue() -> Catalogue:
    """The demo model (region "local") and a second model served in region "eu"."""
    demo = demo_catalogue("http://127.0.0.1:9/demo/v1")
    eu = Provider("acme-eu", "http://127.0.0.1:9/v1", "", "eu")
    big = ModelEntry(
        id="acme/big",
        providers=("acme-eu",),
        upstream_model="big",
        prompt_price=parse_price_per_million("1.00"),
        completion_price=parse_price_per_million("2.00"),
        max_output_tokens=1000,
    )
    return Catalogue({**demo.providers, eu.name: eu}, {**demo.models, big.id: big})


CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
FORM_ID = re.compile(r'name="form_id" value="([^"]+)"')
KEY_ROW = re.compile(
    r'data-key-id="([0-9a-f-]{36})">\s*<th scope="row"[^>]*><span class="name">([^<]*)</span>'
)
TOKEN_FIELD = re.compile(r'id="token"[^>]*value="(lr-sk-[^"]+)"')


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "the page has no CSRF field"
    return match.group(1)


def form_id_of(html: str) -> str:
    match = FORM_ID.search(html)
    assert match, "the page has no form id"
    return match.group(1)


def token_of(html: str) -> str:
    match = TOKEN_FIELD.search(html)
    assert match, "the page shows no token"
    return match.group(1)


@dataclass
class Account:
    id: UUID
    management_key: str
    management_key_id: UUID


@dataclass
class Browser:
    """One browser profile: its own cookie jar. Records every page it was shown."""

    client: TestClient
    pages: list[tuple[str, str]] = field(default_factory=list)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        kwargs.setdefault("follow_redirects", False)
        response = self.client.request(method, path, **kwargs)
        self.pages.append((f"{method} {path} -> {response.status_code}", response.text))
        return response

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, data: dict[str, str] | list[tuple[str, str]]) -> httpx.Response:
        """A form post, as a browser sends it (repeated fields for checkboxes)."""
        pairs = list(data.items()) if isinstance(data, dict) else data
        return self.request(
            "POST",
            path,
            content=urlencode(pairs).encode(),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )

    def csrf(self) -> str:
        """The session's CSRF token, as every signed-in page carries it."""
        return csrf_of(self.get("/dashboard/keys").text)

    def sign_in(self, management_key: str) -> httpx.Response:
        form = self.get("/dashboard/sign-in")
        return self.post(
            "/dashboard/sign-in",
            {"csrf_token": csrf_of(form.text), "management_key": management_key},
        )

    def signed_in(self, management_key: str) -> "Browser":
        response = self.sign_in(management_key)
        assert response.status_code == 303, response.text
        assert response.headers["location"] == "/dashboard/overview"
        return self

    def create_key(
        self, name: str, models: list[str] | None = None, region: str = "", daily_limit: str = ""
    ) -> tuple[UUID, str]:
        """Through the New key form; returns the key's id and the token shown once."""
        form = self.get("/dashboard/keys/new")
        data = [
            ("csrf_token", csrf_of(form.text)),
            ("form_id", form_id_of(form.text)),
            ("name", name),
            ("region", region),
            ("daily_limit", daily_limit),
            *[("models", m) for m in models or []],
        ]
        response = self.post("/dashboard/keys/new", data)
        assert response.status_code == 200, response.text
        return self.key_id_by_name(name), token_of(response.text)

    def key_id_by_name(self, name: str) -> UUID:
        html = self.get("/dashboard/keys").text
        for key_id, shown in KEY_ROW.findall(html):
            if shown == name:
                return UUID(key_id)
        raise AssertionError(f"no key named {name!r} on the keys page")

    @property
    def session_cookie(self) -> str | None:
        return self.client.cookies.get(COOKIE)


@dataclass
class Dash:
    app: Starlette
    runtime: Runtime
    clock: Clock
    catalogue: Catalogue
    browsers: list[Browser] = field(default_factory=list)
    _api: TestClient | None = None

    def browser(self, base_url: str = "http://testserver") -> Browser:
        # Not entered as a context manager: the fixture's client runs the app's lifespan once.
        browser = Browser(TestClient(self.app, base_url=base_url))
        self.browsers.append(browser)
        return browser

    def open_account(self, credits: str = "100") -> Account:
        ledger = self.runtime.app
        opened = ledger.open_account(
            f"acct-{uuid.uuid4().hex[:10]}", OPERATOR, parse_credits(credits)
        )
        return Account(opened.account.id, opened.token.value, opened.management_key_id)

    def api_key(self, token: str) -> httpx.Response:
        """GET /api/v1/key with an inference token: does the gateway accept it?"""
        return self.api.get("/api/v1/key", headers={"Authorization": f"Bearer {token}"})

    @property
    def api(self) -> TestClient:
        if self._api is None:
            self._api = TestClient(self.app)
        return self._api

    def record_usage(
        self,
        account: Account,
        key_id: UUID,
        model: str = "lowrouter/echo",
        cost: str = "0.002",
        key_name: str = "",
        client_ip: str = "127.0.0.1",
        api: Api = "chat.completions",
    ) -> str:
        """A completion as the gateway records it: a hold, then its settlement."""
        spend = self.runtime.spend
        request_id = "req_" + uuid.uuid4().hex
        amount = parse_credits(cost)
        spend.reserve(account.id, request_id, key_id, model, amount, None).result(timeout=10)
        spend.settle(
            account.id,
            request_id,
            amount,
            Usage(
                key_name=key_name or self.runtime.app.get_key(key_id).name,
                model=model,
                provider="lowrouter-demo",
                region="local",
                prompt_tokens=12,
                completion_tokens=7,
                status="ok",
                status_code=200,
                latency_ms=42,
                streamed=False,
                client_ip=client_ip,
                user_agent="tests",
                api=api,
            ),
        ).result(timeout=10)
        return request_id

    def issue_key(self, account: Account, name: str, scope: Scope | None = None) -> UUID:
        return self.runtime.app.create_key(account.id, name, scope or Scope(), OPERATOR).key.id

    def all_pages(self) -> list[tuple[str, str]]:
        return [page for browser in self.browsers for page in browser.pages]


@pytest.fixture
def dash(settings: Settings) -> Iterator[Dash]:
    clock = Clock()
    runtime = open_runtime(settings, clock)
    catalogue = two_region_catalogue()
    app = create_app(runtime, catalogue, clock=clock, run_background=False)
    install_dashboard(app)
    with TestClient(app):  # runs the lifespan: the gateway; closes the runtime at the end
        yield Dash(app, runtime, clock, catalogue)
