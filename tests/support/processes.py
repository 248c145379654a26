"""The processes the e2e tests start, in one place: a free port, the environment of a gateway
process on a test database, the gateway under uvicorn in a subprocess (or `lowrouter serve`, or
the background process), waiting until it answers, and stopping it; finding `serve`'s
background process; load on gateways."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.stores import PEPPER

LOWROUTER = str(Path(sys.executable).with_name("lowrouter"))  # the installed script
BACKGROUND = [sys.executable, "-m", "infrastructure.cli", "projections", "run"]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def gateway_environment(database_url: str, data_dir: Path, **settings: str) -> dict[str, str]:
    """This environment without any LOWROUTER_ setting of its own (a developer's shell must not
    change a test), on the test database; no access log (no request lines in pytest's output).
    `settings`: more LOWROUTER_ settings, which win."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOWROUTER_")}
    env.update(
        LOWROUTER_DATABASE_URL=database_url,
        LOWROUTER_TOKEN_PEPPER=PEPPER,
        LOWROUTER_DATA_DIR=str(data_dir),
        LOWROUTER_ACCESS_LOG="false",
    )
    env.update(settings)
    return env


def serve_environment(data_dir: Path, **settings: str) -> dict[str, str]:
    """As gateway_environment, on a SQLite file of its own in `data_dir` (`lowrouter serve`)."""
    return gateway_environment(f"sqlite:///{data_dir}/lowrouter.db", data_dir, **settings)


def start_gateway(
    env: Mapping[str, str], port: int, log_level: str = "warning"
) -> subprocess.Popen[bytes]:
    """The production app under uvicorn, in a subprocess of its own, on 127.0.0.1:`port`."""
    code = (
        "import uvicorn; uvicorn.run('infrastructure.server:app_factory', factory=True, "
        f"host='127.0.0.1', port={port}, log_level={log_level!r})"
    )
    return subprocess.Popen([sys.executable, "-c", code], env=dict(env))


def start_background(env: Mapping[str, str], **popen: Any) -> subprocess.Popen[bytes]:
    """`lowrouter projections run`: projections, reconciler and chain in a process of their own."""
    return subprocess.Popen(BACKGROUND, env=dict(env), **popen)


def start_serve(
    env: Mapping[str, str], port: int, *args: str, **popen: Any
) -> subprocess.Popen[Any]:
    """`lowrouter serve --port PORT [args]` as operators run it (it starts its own background
    process unless LOWROUTER_BACKGROUND says otherwise)."""
    return subprocess.Popen(
        [LOWROUTER, "serve", "--port", str(port), *args], env=dict(env), **popen
    )


def wait_until_up(
    target: int | str,
    *processes: subprocess.Popen[Any],
    timeout: float = 30.0,
    output: Callable[[], str] = lambda: "",
) -> None:
    """Until GET /healthz answers 200 on `target` (a port on 127.0.0.1, or a base URL), failing
    at once if one of `processes` exited. `output`: what to show when it fails."""
    url = f"http://127.0.0.1:{target}" if isinstance(target, int) else target
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        exited = [p.args for p in processes if p.poll() is not None]
        assert not exited, f"exited before {url} answered: {exited} {output()}"
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {timeout:g} s {output()}")


def stop(process: subprocess.Popen[Any], timeout: float = 20.0) -> None:
    """SIGTERM (a clean shutdown), then SIGKILL if it has not ended within `timeout`."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


@dataclass(frozen=True)
class GatewayProcess:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def gateway_process(env: Mapping[str, str], log_level: str = "warning") -> Iterator[GatewayProcess]:
    """A gateway process on a free port, once it answers; stopped at the end (a test may kill
    it before)."""
    port = free_port()
    process = start_gateway(env, port, log_level)
    try:
        wait_until_up(port, process)
        yield GatewayProcess(port, process)
    finally:
        stop(process)


def children_of(pid: int) -> dict[int, str]:
    """The processes whose parent is `pid`, with their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            found[int(entry.name)] = cmdline
    return found


def background_pid(serve_pid: int, timeout: float = 20.0, not_this: int | None = None) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid, cmdline in children_of(serve_pid).items():
            if "projections run" in cmdline and pid != not_this:
                return pid
        time.sleep(0.1)
    raise AssertionError(f"no background process under {serve_pid}: {children_of(serve_pid)}")


# Load on gateways ---------------------------------------------------------------------------------


FIRE_BODY = {
    "model": "lowrouter/echo",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "hello " * 20}],
}


async def fire(urls: list[str], tokens: list[str], total: int) -> list[int]:
    body = FIRE_BODY
    limits = httpx.Limits(max_connections=total)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one(i: int) -> int:
            response = await client.post(
                urls[i % len(urls)] + "/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {tokens[i % len(tokens)]}"},
            )
            return response.status_code

        return list(await asyncio.gather(*(one(i) for i in range(total))))


def worst_case_of_one_request() -> int:
    # lowrouter/echo: 0.10 prompt + 0.40 completion credits per million tokens; the hold covers the
    # prompt bound of the body `fire` sends plus max_tokens=100. From the catalogue, not hard-coded.
    from domain.pricing import hold_for, prompt_bound
    from infrastructure.catalogue import demo_catalogue

    entry = demo_catalogue("http://x/v1").models["lowrouter/echo"]
    return hold_for(entry.prices, prompt_bound(FIRE_BODY), 100)
