"""`lowrouter serve` in a subprocess, as operators run it, facing the fake upstream; its
stdout and stderr kept in files for the test to read."""

import json
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from domain.actor import Actor
from domain.scope import Scope
from infrastructure.catalogue import load_catalogue
from infrastructure.http.app import create_app
from infrastructure.runtime import Runtime, open_runtime
from infrastructure.settings import load_settings
from tests.fake_upstream import FakeUpstream, fake_environ, write_catalogue
from tests.support.processes import free_port, start_serve, stop, wait_until_up
from tests.support.servers import LiveServer
from tests.support.stores import PEPPER

OPERATOR = Actor("operator", "cli:observability-tests")


@dataclass
class Served:
    url: str
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def output(self) -> tuple[str, str]:
        return self.stdout.read_text(), self.stderr.read_text()


def issue_key(runtime: Runtime, name: str, credits: int) -> tuple[str, str]:
    """A new account with `credits` micro-credits and one inference key: (account id, token)."""
    account = runtime.app.open_account(name, OPERATOR, credits).account
    token = runtime.app.create_key(account.id, f"{name}-key", Scope(), OPERATOR).token.value
    return str(account.id), token


@contextmanager
def serving(
    tmp_path: Path,
    database_url: str,
    catalogue: Path | None,
    workers: int = 1,
    env: Mapping[str, str] | None = None,
) -> Iterator[Served]:
    port = free_port()
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("LOWROUTER_", "OTEL_"))},
        **fake_environ(),
        "LOWROUTER_DATABASE_URL": database_url,
        "LOWROUTER_TOKEN_PEPPER": PEPPER,
        "LOWROUTER_DATA_DIR": str(tmp_path),
        **({"LOWROUTER_CONFIG": str(catalogue)} if catalogue else {}),
        **(env or {}),
    }
    environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    stdout, stderr = tmp_path / "serve.out", tmp_path / "serve.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = start_serve(environ, port, "--workers", str(workers), stdout=out, stderr=err)
    served = Served(f"http://127.0.0.1:{port}", process, stdout, stderr)
    try:
        # generous: workers start slowly on a machine shared with other test runs
        wait_until_up(port, process, timeout=90, output=lambda: str(served.output()))
        if environ.get("LOWROUTER_LOG_FORMAT") == "json":
            wait_for_workers(served, workers)
        yield served
    finally:
        stop(process, timeout=30)


def eventually(url: str, status: int, timeout: float = 20.0) -> httpx.Response:
    """GET /readyz until it answers `status` (or the time is up: the last answer)."""
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(url + "/readyz", timeout=10)
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.1)


def wait_for_workers(served: Served, workers: int, timeout: float = 60.0) -> None:
    """Until every worker logged that it is ready (the first may answer long before the last)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in served.stderr.read_text().splitlines() if line]
        if sum(line.get("event") == "ready" for line in lines) >= workers:
            return
        time.sleep(0.1)
    raise AssertionError(f"not every worker started: {served.output()}")


def gateway_in_a_thread(
    tmp_path: Path, upstream: FakeUpstream, env: dict[str, str]
) -> tuple[Any, LiveServer]:
    """The app on SQLite facing the fake upstream, and a LiveServer (not started) serving it."""
    settings = load_settings(
        {"LOWROUTER_TOKEN_PEPPER": PEPPER, "LOWROUTER_DATA_DIR": str(tmp_path), **env},
        database_url=f"sqlite:///{tmp_path}/lowrouter.db",
    )
    runtime = open_runtime(settings)
    catalogue = write_catalogue(
        tmp_path / "lowrouter.toml", upstream.base_url, modes=("ok", "error500", "slow")
    )
    app = create_app(runtime, load_catalogue(catalogue, fake_environ()))
    return app, LiveServer(app)
