"""The faults suite's harness: an in-process gateway (a real uvicorn in a thread) on a store the
test chooses, in front of the fake upstream, with short deadlines; a client that records what
each request was told it cost; client threads loading it; PostgreSQL behind a TCP proxy the test
stops and restarts; and waiting for the settlements that waited out an outage."""

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from domain.actor import Actor
from domain.scope import Scope
from infrastructure.catalogue import load_catalogue
from infrastructure.http.app import create_app
from infrastructure.runtime import Runtime, open_runtime
from infrastructure.settings import load_settings, postgres_parts
from tests.fake_upstream import FakeUpstream, fake_environ, write_catalogue
from tests.support.ledger_check import replay
from tests.support.proxy import TcpProxy
from tests.support.servers import LiveServer
from tests.support.stores import PEPPER

OPERATOR = Actor("operator", "faults")
CREDITS = 10**9
HELLO = [{"role": "user", "content": "tell me a story"}]
SHORT_DEADLINES = {
    "LOWROUTER_HOLD_TIMEOUT_SECONDS": "0.3",
    "LOWROUTER_UPSTREAM_IDLE_SECONDS": "0.5",
    "LOWROUTER_MAX_REQUEST_SECONDS": "3",
    "LOWROUTER_UPSTREAM_TIMEOUT_SECONDS": "3",
    "LOWROUTER_STORE_WAIT_SECONDS": "0.5",
}


def micro(amount: Any) -> int:
    return int(Decimal(str(amount)) * 1_000_000)


@dataclass
class Gateway:
    url: str
    runtime: Runtime
    token: str
    account_id: Any
    told: dict[str, int] = field(default_factory=dict)  # request id -> the cost it was told
    statuses: dict[str, int] = field(default_factory=dict)  # request id -> HTTP status
    refused: set[str] = field(default_factory=set)  # 503 store_unavailable: nothing charged

    @property
    def api(self) -> str:
        return self.url + "/api/v1/chat/completions"

    def body(self, model: str, stream: bool) -> dict[str, Any]:
        return {"model": model, "messages": HELLO, "stream": stream, "max_tokens": 50}

    def call(self, client: httpx.Client, model: str, stream: bool = False) -> int:
        """One request; records what it was told. Returns the HTTP status."""
        headers = {"Authorization": f"Bearer {self.token}"}
        with client.stream("POST", self.api, json=self.body(model, stream), headers=headers) as r:
            request_id = r.headers["x-request-id"]
            self.statuses[request_id] = r.status_code
            if r.status_code == 503:
                r.read()
                assert r.json()["error"]["code"] == "store_unavailable", r.text
                assert r.headers["retry-after"]
                self.refused.add(request_id)  # refused before the upstream: no hold kept
                return 503
            if r.status_code != 200:
                r.read()
                self.told[request_id] = 0  # an error answer: "you were not charged"
                return r.status_code
            if not stream:
                self.told[request_id] = micro(r.headers["x-lowrouter-cost"])
                return 200
            usage = None
            for line in r.iter_lines():
                if line.startswith("data:") and line[5:].strip() != "[DONE]":
                    chunk = json.loads(line[5:])
                    if isinstance(chunk, dict) and chunk.get("usage"):
                        usage = chunk["usage"]
            assert usage is not None, f"{request_id}: a stream without its final usage chunk"
            self.told[request_id] = micro(usage["cost"])
            return 200


@contextmanager
def running_gateway(
    database_url: str,
    tmp_path: Path,
    upstream: FakeUpstream,
    env: Mapping[str, str] | None = None,
) -> Iterator[Gateway]:
    settings = load_settings(
        {
            "LOWROUTER_TOKEN_PEPPER": PEPPER,
            "LOWROUTER_DATA_DIR": str(tmp_path),
            **SHORT_DEADLINES,
            **(env or {}),
        },
        database_url=database_url,
    )
    runtime = open_runtime(settings)
    catalogue = write_catalogue(tmp_path / "lowrouter.toml", upstream.base_url)
    opened = runtime.app.open_account("faults", OPERATOR, credits=CREDITS)
    token = runtime.app.create_key(opened.account.id, "k", Scope(), OPERATOR).token.value
    app = create_app(runtime, load_catalogue(catalogue, fake_environ()), run_background=False)
    server = LiveServer(app)
    url = server.start()
    try:
        yield Gateway(url, runtime, token, opened.account.id)
    finally:
        server.stop()  # the app's lifespan closes the runtime


@dataclass(frozen=True)
class ProxiedPostgres:
    """The test's PostgreSQL database reached through `proxy`: stopping the proxy stands in for
    the store going away (every connection cut) without touching the shared server."""

    proxy: TcpProxy
    url: str  # the database through the proxy
    dbname: str


@contextmanager
def proxied_postgres(postgres_url: str) -> Iterator[ProxiedPostgres]:
    pg = postgres_parts(postgres_url)
    proxy = TcpProxy((pg["host"], int(pg["port"]))).start()
    try:
        url = f"postgresql://{pg['user']}@127.0.0.1:{proxy.port}/{pg['dbname']}"
        yield ProxiedPostgres(proxy, url, pg["dbname"])
    finally:
        proxy.stop()


@dataclass(frozen=True)
class Call:
    started: float
    finished: float
    outcome: int | str  # the HTTP status, or the transport error's name


class Load:
    """`clients` threads sending requests to `fake/ok` (every other one streams) until the
    block ends; every call recorded."""

    def __init__(self, gateway: Gateway, clients: int) -> None:
        self.gateway = gateway
        self.calls: list[Call] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(i,)) for i in range(clients)]

    def _loop(self, index: int) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    outcome: int | str = self.gateway.call(client, "fake/ok", index % 2 == 0)
                except httpx.HTTPError as error:
                    outcome = type(error).__name__
                self.calls.append(Call(started, time.monotonic(), outcome))

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def outcomes(self) -> Counter[int | str]:
        return Counter(c.outcome for c in list(self.calls))

    def first_200_after(self, moment: float, timeout: float = 60) -> float:
        """Seconds from `moment` to the first 200 of a request started after it."""
        deadline = time.monotonic() + timeout
        while True:
            done = [c.finished for c in list(self.calls) if c.started > moment and c.outcome == 200]
            if done:
                return min(done) - moment
            assert time.monotonic() < deadline, f"no 200 within {timeout} s"
            time.sleep(0.02)

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "the load made no progress"
            time.sleep(0.02)


def wait_until_settled(gateway: Gateway, timeout: float) -> None:
    """Until every answer the gateway gave is settled in the raw event log (the settlements
    that waited out an outage land once the store is back)."""
    deadline = time.monotonic() + timeout
    while not all(r in replay(gateway.runtime).settled for r in gateway.told):
        assert time.monotonic() < deadline, "a settlement never landed"
        time.sleep(0.1)
