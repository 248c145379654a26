"""An ASGI app served by a real uvicorn on a free 127.0.0.1 port, in a background thread: the one
start-up and shutdown of every in-thread server the tests run (gateways, fake upstreams)."""

import socket
import threading
import time
from typing import Any

import uvicorn

DEFAULTS: dict[str, Any] = {
    "log_config": None,  # leave the test process's logging alone
    "log_level": "warning",
    "access_log": False,
    "lifespan": "on",
    "timeout_graceful_shutdown": 3,
    "proxy_headers": False,  # as `lowrouter serve`: the app decides the client address
}


class LiveServer:
    """uvicorn serving one app on a free 127.0.0.1 port in a background thread; `config`
    overrides uvicorn.Config's DEFAULTS. `start()` returns its base URL; or `with LiveServer(app)
    as url:`."""

    def __init__(self, app: Any, name: str = "live-server", **config: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, **{**DEFAULTS, **config}))
        self.thread = threading.Thread(
            target=self.server.run,
            kwargs={"sockets": [self.sock]},
            name=f"{name}-{self.port}",
            daemon=True,
        )

    def start(self, timeout: float = 15.0) -> str:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.thread.is_alive():
                self.sock.close()
                raise RuntimeError(f"{self.thread.name} stopped during startup")
            if self.server.started:
                return self.url
            time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"{self.thread.name} did not start within {timeout:g} s")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(timeout=5)
        self.sock.close()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
