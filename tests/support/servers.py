"""An app served by a real uvicorn on a free 127.0.0.1 port, in a background thread."""

import socket
import threading
import time
from typing import Any

import uvicorn


class LiveServer:
    """uvicorn serving one app on a free 127.0.0.1 port in a background thread."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            log_config=None,  # leave the test process's logging alone
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=3,
            proxy_headers=False,  # as `lowrouter serve`: the app decides the client address
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run,
            kwargs={"sockets": [self.sock]},
            name=f"e2e-gateway-{self.port}",
            daemon=True,
        )

    def start(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if not self.thread.is_alive():
                raise RuntimeError("the gateway stopped during startup")
            if self.server.started:
                return f"http://127.0.0.1:{self.port}"
            time.sleep(0.01)
        self.stop()
        raise RuntimeError("the gateway did not start within 15 s")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(timeout=5)
        self.sock.close()
