"""Gateway processes for the multi-process tests: a free port, a gateway under uvicorn in a
subprocess on a given database, waiting until it answers, and finding `serve`'s background
process."""

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from tests.support.stores import PEPPER


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_gateway(
    database_url: str, port: int, data_dir: Path, extra: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`extra`: more settings (e.g. LOWROUTER_DATABASE_POOLER); the ones below win."""
    env = {
        **os.environ,
        "LOWROUTER_ACCESS_LOG": "false",  # no request lines in pytest's output (`extra` may say)
        **(extra or {}),
        "LOWROUTER_DATABASE_URL": database_url,
        "LOWROUTER_TOKEN_PEPPER": PEPPER,
        "LOWROUTER_DATA_DIR": str(data_dir),
    }
    env.pop("LOWROUTER_CONFIG", None)
    code = (
        "import uvicorn; uvicorn.run('infrastructure.server:app_factory', factory=True, "
        f"host='127.0.0.1', port={port}, log_level='warning')"
    )
    return subprocess.Popen([sys.executable, "-c", code], env=env)


def wait_until_up(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "the gateway process exited"
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("gateway did not start")


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


def wait_healthy(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("serve did not start")


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
