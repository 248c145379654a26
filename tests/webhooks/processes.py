"""Gateway processes for the webhook and leak tests: the real app under uvicorn, in a process of
its own, on a test database (the schema prepared by the test's own runtime first)."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.processes import free_port
from tests.support.stores import PEPPER


def gateway_environment(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOWROUTER_")}
    env.update(
        LOWROUTER_DATABASE_URL=database_url,
        LOWROUTER_TOKEN_PEPPER=PEPPER,
        LOWROUTER_DATA_DIR=str(data_dir),
        LOWROUTER_WEBHOOKS_ALLOW_PRIVATE="true",
        LOWROUTER_ACCESS_LOG="false",  # no request lines in pytest's output
    )
    env.update(
        **extra,
    )
    return env


@contextmanager
def gateway_process(env: Mapping[str, str]) -> Iterator[str]:
    """A gateway on a free port; yields its base URL; stopped on exit."""
    with gateway_child(env) as (url, _process):
        yield url


@contextmanager
def gateway_child(env: Mapping[str, str]) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A gateway on a free port: its base URL and the process (a test may kill it)."""
    port = free_port()
    code = (
        "import uvicorn; uvicorn.run('infrastructure.server:app_factory', factory=True, "
        f"host='127.0.0.1', port={port}, log_level='warning')"
    )
    process = subprocess.Popen([sys.executable, "-c", code], env=dict(env))
    try:
        wait_until_up(port, process)
        yield f"http://127.0.0.1:{port}", process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_until_up(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "the gateway process exited"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the gateway did not start")
