"""A PgBouncer of the test's own: Debian's `pgbouncer` binary (`make pgbouncer` installs it),
started on a free port with its own configuration, in front of the shared PostgreSQL server.

Any database name is passed through (`* =`), so a test's fresh database is reachable through it
at once. PgBouncer refuses to run as root: it is started as the `postgres` user when we are.
"""

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from infrastructure.database import KEEPALIVE_COUNT, KEEPALIVE_IDLE, KEEPALIVE_INTERVAL
from tests.support.processes import free_port
from tests.support.stores import PG_ADMIN_URL

BINARY = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
MODES = ("transaction", "session")


def require_pgbouncer() -> None:
    if not os.path.exists(BINARY):
        message = "pgbouncer is not installed (make pgbouncer, or apt-get install -y pgbouncer)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@dataclass(frozen=True)
class PgBouncer:
    mode: str
    host: str
    port: int

    def url_for(self, database_url: str) -> str:
        """The same database, through this PgBouncer."""
        parts = urlsplit(database_url)
        netloc = f"{parts.username or 'postgres'}@{self.host}:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    def url_on(self, database_url: str, host: str) -> str:
        """The same database through this PgBouncer's listener on another address."""
        parts = urlsplit(database_url)
        netloc = f"{parts.username or 'postgres'}@{host}:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _config(mode: str, listen: Sequence[str], port: int, directory: Path) -> str:
    upstream = urlsplit(PG_ADMIN_URL)
    return f"""[databases]
* = host={upstream.hostname or "127.0.0.1"} port={upstream.port or 5432}

[pgbouncer]
listen_addr = {",".join(listen)}
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {directory}/users.txt
pool_mode = {mode}
max_client_conn = 1000
default_pool_size = 20
max_db_connections = 40
server_reset_query = DISCARD ALL
idle_transaction_timeout = 5
tcp_keepalive = 1
tcp_keepidle = {KEEPALIVE_IDLE}
tcp_keepintvl = {KEEPALIVE_INTERVAL}
tcp_keepcnt = {KEEPALIVE_COUNT}
ignore_startup_parameters = extra_float_digits
logfile = {directory}/pgbouncer.log
pidfile = {directory}/pgbouncer.pid
"""


@contextmanager
def running_pgbouncer(mode: str, listen: Sequence[str] = ("127.0.0.1",)) -> Iterator[PgBouncer]:
    """PgBouncer in `mode` ("transaction" or "session") on a free port, until the block ends."""
    require_pgbouncer()
    directory = Path(tempfile.mkdtemp(prefix=f"lr-pgbouncer-{mode}-"))
    directory.chmod(0o755)
    port = free_port()
    (directory / "users.txt").write_text('"postgres" ""\n')
    (directory / "pgbouncer.ini").write_text(_config(mode, listen, port, directory))
    command = [BINARY, str(directory / "pgbouncer.ini")]
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(directory, user.pw_uid, user.pw_gid)
        command[1:1] = ["-u", "postgres"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_listening(listen[0], port, process, directory)
        yield PgBouncer(mode, listen[0], port)
    finally:
        process.send_signal(signal.SIGINT)  # SIGINT: shut down at once (SIGTERM waits for clients)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)


def _wait_listening(
    host: str, port: int, process: subprocess.Popen[bytes], directory: Path
) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = (directory / "pgbouncer.log").read_text(errors="replace")[-2000:]
            stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"pgbouncer exited ({process.returncode}): {stderr} {log}")
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("pgbouncer did not start listening")


@pytest.fixture(scope="session")
def pgbouncers() -> Iterator[dict[str, PgBouncer]]:
    """One PgBouncer per pool mode for the whole session, started on first use."""
    started: dict[str, PgBouncer] = {}
    stack = ExitStack()

    class Lazy(dict[str, PgBouncer]):
        def __missing__(self, mode: str) -> PgBouncer:
            started[mode] = stack.enter_context(running_pgbouncer(mode))
            self[mode] = started[mode]
            return started[mode]

    with stack:
        yield Lazy()
