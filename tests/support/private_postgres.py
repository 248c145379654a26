"""A PostgreSQL cluster of the test's own, to restart at will: initdb into a temporary directory,
started on a free port as the `postgres` user (runuser), removed afterwards. The shared server
at 127.0.0.1:5432 is never touched."""

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest

from tests.support.processes import free_port

DATABASE = "lowrouter"


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found or shutil.which("runuser") is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"a private PostgreSQL needs {name} and runuser (required under CI)")
        pytest.skip(f"no PostgreSQL {name} or runuser on this machine")
    return found[-1]


def _as_postgres(*command: str) -> None:
    subprocess.run(
        ["runuser", "-u", "postgres", "--", *command],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=60,
    )


@dataclass
class PrivatePostgres:
    directory: str
    port: int

    @property
    def data(self) -> str:
        return os.path.join(self.directory, "data")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def pg_ctl(self, *args: str) -> None:
        log = os.path.join(self.directory, "server.log")
        _as_postgres(_bin("pg_ctl"), "-D", self.data, "-l", log, "-w", "-t", "30", *args)

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: every session ended, the server back on the same port."""
        self.pg_ctl("restart", "-m", "fast")


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    directory = tempfile.mkdtemp(prefix="lowrouter-pg-")
    shutil.chown(directory, "postgres")
    cluster = PrivatePostgres(directory, free_port())
    try:
        _as_postgres(
            _bin("initdb"), "-D", cluster.data, "-U", "postgres", "-A", "trust", "--no-sync"
        )
        options = f"-p {cluster.port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        cluster.pg_ctl("start", "-o", options)
        with psycopg.connect(
            f"host=127.0.0.1 port={cluster.port} user=postgres dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')
        yield cluster
    finally:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            cluster.pg_ctl("stop", "-m", "immediate")
        shutil.rmtree(directory, ignore_errors=True)
