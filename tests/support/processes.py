"""Gateway processes for the multi-process tests: a free port, a gateway under uvicorn in a
subprocess on a given database, and waiting until it answers."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.stores import PEPPER


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_gateway(database_url: str, port: int, data_dir: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "LOWROUTER_DATABASE_URL": database_url,
        "LOWROUTER_TOKEN_PEPPER": PEPPER,
        "LOWROUTER_DATA_DIR": str(data_dir),
        "LOWROUTER_DEMO_BASE_URL": f"http://127.0.0.1:{port}/demo/v1",
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
