"""End-to-end fixtures: the real gateway under uvicorn on a free port, facing the fake upstream.

    def test_something(gateway: LiveGateway) -> None:
        response = httpx.post(gateway.api + "/chat/completions", headers=gateway.auth(), json=...)
        row = gateway.usage_row(response.headers["x-request-id"])

Each test gets a fresh account (with credits) and inference key on a running gateway: a real
uvicorn server in a background thread serving `create_app(open_runtime(settings), catalogue)`.
Servers are started on first use and shared, one per store (SQLite, PostgreSQL — every test runs
on both) and configuration (`CONFIGS`: catalogue and settings), each on its own fresh database.
Everything a test looks at is filtered by its own account, so sharing a server changes nothing
but the time the suite takes.

`gateway` uses the "default" configuration: every fake mode in region "us", fake/ok the cheapest
(so `lowrouter/auto` picks it). `start_gateway(config, credits=..., scope=...)` gives another.
"""

import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from application.spend import PageView
from domain.actor import Actor
from domain.money import MICRO, parse_credits
from domain.scope import Scope
from infrastructure.catalogue import load_catalogue
from infrastructure.http.app import create_app
from infrastructure.runtime import Runtime, open_runtime
from infrastructure.settings import load_settings, postgres_parts
from projections.schema import holds, usage
from tests.fake_upstream import (
    FAKE_API_KEY_ENV,
    MODES,
    FakeUpstream,
    fake_environ,
    run_fake_upstream,
    write_catalogue,
)
from tests.support.servers import LiveServer as _Server
from tests.support.stores import PEPPER, PG_ADMIN_URL, pg_admin_conninfo, require_postgres

OPERATOR = Actor("operator", "cli:e2e-tests")
DEFAULT_CREDITS = "100"
USER_HELLO = [{"role": "user", "content": "Hello"}]
UPSTREAM_TIMEOUT_SECONDS = 1  # the "impatient" gateway's upstream timeout
MAX_BODY_BYTES = 2048  # the "small-body" gateway's request size limit


def micro(amount: str | float) -> int:
    """A response's credits as micro-credits: a decimal string (management and usage APIs) or a
    JSON number as parsed (inference answers' `usage.cost`). Exact; fails on a non-number."""
    assert isinstance(amount, str | int | float) and not isinstance(amount, bool), amount
    value = Decimal(str(amount)) * MICRO  # str() of a parsed float: its shortest exact digits
    assert value == value.to_integral_value(), amount
    return int(value)


# --- catalogues and configurations ---------------------------------------------------------------


def two_region_catalogue(path: Path, base_url: str) -> Path:
    """Providers in "us" and "eu": fake/ok only in "us", fake/overrun only in "eu",
    fake/stream-no-usage in both."""
    path.write_text(
        f"""
[providers."fake-us"]
base_url = "{base_url}"
api_key_env = "{FAKE_API_KEY_ENV}"
region = "us"

[providers."fake-eu"]
base_url = "{base_url}"
api_key_env = "{FAKE_API_KEY_ENV}"
region = "eu"

[models."fake/ok"]
provider = "fake-us"
upstream_model = "fake-ok"
prompt_price_per_million = "1.00"
completion_price_per_million = "2.00"
max_output_tokens = 256

[models."fake/stream-no-usage"]
providers = ["fake-us", "fake-eu"]
upstream_model = "fake-stream-no-usage"
prompt_price_per_million = "1.00"
completion_price_per_million = "2.00"
max_output_tokens = 256

[models."fake/overrun"]
provider = "fake-eu"
upstream_model = "fake-overrun"
prompt_price_per_million = "3.00"
completion_price_per_million = "4.00"
max_output_tokens = 256
""",
        encoding="utf-8",
    )
    return path


def default_catalogue(path: Path, base_url: str) -> Path:
    return write_catalogue(path, base_url, prices={"ok": ("0.50", "1.00")})


def fallback_catalogue(path: Path, base_url: str) -> Path:
    """lowrouter/auto's order: fake/error500 (cheapest), fake/ok, fake/stream-no-usage."""
    return write_catalogue(
        path,
        base_url,
        modes=("error500", "ok", "stream-no-usage"),
        prices={"error500": ("0.01", "0.01"), "ok": ("0.50", "0.50")},
    )


def apis_catalogue(path: Path, base_url: str) -> Path:
    """Every API's models: "fake/<mode>" on an OpenAI-dialect provider, "claude/<mode>" on an
    Anthropic-dialect one (the fake speaks both), and "fake/embed-<mode>" of kind embedding."""
    lines = [
        '[providers."fake-us"]',
        f'base_url = "{base_url}"',
        f'api_key_env = "{FAKE_API_KEY_ENV}"',
        'region = "us"',
        "",
        '[providers."fake-anthropic"]',
        f'base_url = "{base_url}"',
        'api = "anthropic"',
        f'api_key_env = "{FAKE_API_KEY_ENV}"',
        'region = "us"',
        "",
    ]
    for mode in MODES:
        lines += [
            f'[models."fake/embed-{mode}"]',
            'provider = "fake-us"',
            'kind = "embedding"',
            f'upstream_model = "fake-{mode}"',
            'prompt_price_per_million = "0.02"',
            "",
        ]
    for vendor, provider in (("fake", "fake-us"), ("claude", "fake-anthropic")):
        for mode in MODES:
            lines += [
                f'[models."{vendor}/{mode}"]',
                f'provider = "{provider}"',
                f'upstream_model = "fake-{mode}"',
                f'prompt_price_per_million = "{APIS_PRICES[0]}"',
                f'completion_price_per_million = "{APIS_PRICES[1]}"',
                f'cached_prompt_price_per_million = "{APIS_PRICES[2]}"',
                f'cache_write_price_per_million = "{APIS_PRICES[3]}"',
                "max_output_tokens = 256",
                "",
            ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


# prompt, completion, cache read, cache write: credits per million (the "apis" configuration)
APIS_PRICES = ("1.00", "2.00", "0.10", "1.25")


@dataclass(frozen=True)
class Config:
    catalogue: Callable[[Path, str], Path]
    env: Mapping[str, str] = field(default_factory=dict)


CONFIGS = {
    "default": Config(default_catalogue),
    "small-body": Config(default_catalogue, {"LOWROUTER_MAX_BODY_BYTES": str(MAX_BODY_BYTES)}),
    "impatient": Config(
        default_catalogue, {"LOWROUTER_UPSTREAM_TIMEOUT_SECONDS": str(UPSTREAM_TIMEOUT_SECONDS)}
    ),
    # Short request deadlines (tests/e2e/test_streaming_failures.py).
    "deadlines": Config(
        default_catalogue,
        {"LOWROUTER_UPSTREAM_IDLE_SECONDS": "0.5", "LOWROUTER_MAX_REQUEST_SECONDS": "4"},
    ),
    "regions": Config(two_region_catalogue),
    "fallback": Config(fallback_catalogue),
    "apis": Config(apis_catalogue),
    # Behind a proxy on loopback: X-Forwarded-For from 127.0.0.1 is believed.
    "proxied": Config(default_catalogue, {"LOWROUTER_TRUSTED_PROXIES": "127.0.0.0/8, ::1"}),
}


# --- a running gateway and what a test sees of it -----------------------------------------------


@dataclass
class LiveGateway:
    """A running gateway, this test's account and key, and the handles to look behind them."""

    url: str  # "http://127.0.0.1:PORT"
    runtime: Runtime
    upstream: FakeUpstream
    account_id: UUID
    management_token: str
    key_id: UUID
    token: str
    initial_balance: int

    @property
    def api(self) -> str:
        return self.url + "/api/v1"

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}

    # --- changing keys and accounts through the application -----------------------------------

    def create_key(
        self, scope: Scope | None = None, name: str = "e2e-extra", policy: Any = None
    ) -> tuple[UUID, str]:
        extra = () if policy is None else (policy,)
        issued = self.runtime.app.create_key(
            self.account_id, name, scope or Scope(), OPERATOR, *extra
        )
        return issued.key.id, issued.token.value

    # --- reading what was recorded ------------------------------------------------------------

    def catch_up(self) -> None:
        """Bring every projection up to the head of the log (the background runner may race)."""
        for _ in range(50):
            try:
                self.runtime.projections.catch_up()
                return
            except OperationalError:  # SQLite "database is locked" while the runner writes
                time.sleep(0.05)
        self.runtime.projections.catch_up()

    def settled(self, timeout: float = 8.0) -> None:
        """Wait until this account has no open hold: an answer's settlement lands just after
        the answer (README, "Settling after the answer")."""
        deadline = time.monotonic() + timeout
        query = select(holds.c.request_id).where(holds.c.account_id == str(self.account_id))
        while True:
            self.catch_up()
            with self.runtime.engine.connect() as conn:
                if conn.execute(query).first() is None or time.monotonic() > deadline:
                    return
            time.sleep(0.05)

    def usage_rows(self) -> list[Any]:
        """This account's usage rows, oldest first, once every answer is settled."""
        self.settled()
        query = (
            select(usage)
            .where(usage.c.account_id == str(self.account_id))
            .order_by(usage.c.position)
        )
        with self.runtime.engine.connect() as conn:
            return list(conn.execute(query).all())

    def rows_for(self, request_id: str) -> list[Any]:
        self.catch_up()
        with self.runtime.engine.connect() as conn:
            return list(conn.execute(select(usage).where(usage.c.request_id == request_id)).all())

    def usage_row(self, request_id: str) -> Any:
        rows = self.wait_for_usage(request_id)
        assert len(rows) == 1, f"expected one usage row for {request_id}, found {len(rows)}"
        return rows[0]

    def wait_for_usage(self, request_id: str, timeout: float = 8.0) -> list[Any]:
        """Poll the projection until the request has a usage row (or the time is up)."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.rows_for(request_id)
            if rows or time.monotonic() > deadline:
                return rows
            time.sleep(0.1)

    def open_holds(self) -> list[Any]:
        self.catch_up()
        query = select(holds).where(holds.c.account_id == str(self.account_id))
        with self.runtime.engine.connect() as conn:
            return list(conn.execute(query).all())

    def page(self) -> PageView:
        """The account's ledger figures, read through the process's spend control."""
        return self.runtime.spend.view(self.account_id).result(timeout=10)

    def spent_today(self, key_id: UUID | None = None) -> int:
        """What the key's meter settled today (an unrotated key is its own meter)."""
        return self.page().day_spent.get(str(key_id or self.key_id), 0)

    def assert_nothing_charged(self) -> None:
        """No usage row with a cost, no open hold, nothing spent, and the balance as funded."""
        assert [r for r in self.usage_rows() if r.cost > 0] == []
        assert self.open_holds() == []
        page = self.page()
        assert page.held == 0
        assert page.spent_today == 0
        assert page.balance == self.initial_balance


@dataclass
class _Running:
    url: str
    runtime: Runtime
    server: _Server
    pg_database: str | None  # the PostgreSQL database to drop when it stops


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _shared_upstream() -> Iterator[FakeUpstream]:
    with run_fake_upstream(slow_seconds=3.0) as upstream:
        yield upstream


def _reset(upstream: FakeUpstream) -> None:
    upstream.mode, upstream.slow_seconds, upstream.chunk_delay = "ok", 3.0, 0.0
    upstream.hangup_after = 3
    upstream.reset()


@pytest.fixture
def upstream(_shared_upstream: FakeUpstream) -> Iterator[FakeUpstream]:
    """The fake upstream, with its knobs at their defaults and its request log empty."""
    _reset(_shared_upstream)
    yield _shared_upstream
    _reset(_shared_upstream)


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest) -> str:
    """Which store the session's gateways for this test run on."""
    if request.param == "postgres":
        require_postgres()
    return str(request.param)


@pytest.fixture(scope="session")
def _gateways(
    tmp_path_factory: pytest.TempPathFactory, _shared_upstream: FakeUpstream
) -> Iterator[Callable[[str, str], _Running]]:
    """Start gateways on first use and keep them for the session, but at most two at a time:
    the store's "default" one and the last other configuration (each gateway holds a few dozen
    database connections, and a PostgreSQL server has room for about a hundred)."""
    import psycopg

    running: dict[tuple[str, str], _Running] = {}

    def create_database(store: str, directory: Path) -> tuple[str, str | None]:
        if store == "sqlite":
            return f"sqlite:///{directory}/lowrouter.db", None
        name = f"lrt_e2e_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(pg_admin_conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        pg = postgres_parts(PG_ADMIN_URL)
        return f"postgresql://{pg['user']}@{pg['host']}:{pg['port']}/{name}", name

    def stop(key: tuple[str, str]) -> None:
        gateway = running.pop(key)
        gateway.server.stop()  # the app's lifespan closes the runtime
        if gateway.pg_database is not None:
            with psycopg.connect(pg_admin_conninfo(), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{gateway.pg_database}" WITH (FORCE)')

    def get(store: str, config_name: str) -> _Running:
        if (store, config_name) in running:
            return running[(store, config_name)]
        for key in list(running):
            if key[0] != store or key[1] != "default":
                stop(key)
        config = CONFIGS[config_name]
        directory = tmp_path_factory.mktemp(f"gateway-{store}-{config_name}")
        catalogue_file = config.catalogue(directory / "lowrouter.toml", _shared_upstream.base_url)
        database_url, pg_database = create_database(store, directory)
        settings = load_settings(
            {
                "LOWROUTER_TOKEN_PEPPER": PEPPER,
                "LOWROUTER_DATA_DIR": str(directory),
                # One session's gateway answers every e2e test's deliberate 401s from 127.0.0.1:
                # the throttle is tested on a gateway of its own (tests/security/test_throttle.py).
                "LOWROUTER_AUTH_FAILURE_BURST": "100000",
                **config.env,
            },
            database_url=database_url,
        )
        runtime = open_runtime(settings)
        try:
            app = create_app(runtime, load_catalogue(catalogue_file, fake_environ()))
            server = _Server(app)
            url = server.start()
        except BaseException:
            runtime.close()
            raise
        running[(store, config_name)] = _Running(url, runtime, server, pg_database)
        return running[(store, config_name)]

    yield get
    for key in list(running):
        stop(key)


StartGateway = Callable[..., LiveGateway]


@pytest.fixture
def start_gateway(
    store: str, _gateways: Callable[[str, str], _Running], upstream: FakeUpstream
) -> StartGateway:
    """A fresh account (`credits`) and key (`scope`) on the running gateway for `config`."""

    def start(
        config: str = "default", *, credits: str = DEFAULT_CREDITS, scope: Scope | None = None
    ) -> LiveGateway:
        running = _gateways(store, config)
        ledger = running.runtime.app
        name = f"e2e-{uuid.uuid4().hex[:12]}"
        opened = ledger.open_account(name, OPERATOR, parse_credits(credits))
        issued = ledger.create_key(opened.account.id, "e2e-key", scope or Scope(), OPERATOR)
        return LiveGateway(
            url=running.url,
            runtime=running.runtime,
            upstream=upstream,
            account_id=opened.account.id,
            management_token=opened.token.value,
            key_id=issued.key.id,
            token=issued.token.value,
            initial_balance=parse_credits(credits),
        )

    return start


@pytest.fixture
def gateway(start_gateway: StartGateway) -> LiveGateway:
    return start_gateway()
