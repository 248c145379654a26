"""What the gateway under test needs before it starts: a catalogue pointing at the fake upstream,
a fresh database (a temporary SQLite file, or a PostgreSQL database created and dropped here), and
an account with plenty of credits and one inference key without a daily limit."""

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

from domain.actor import Actor
from domain.scope import Scope
from infrastructure.runtime import Runtime, open_runtime
from infrastructure.settings import load_settings, postgres_parts

PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PEPPER = "bench-pepper-not-secret"
MODEL = "bench/fast"
CREDITS = 10**15  # micro-credits: a billion credits, never the limit
OPERATOR = Actor("operator", "cli:bench")


def write_catalogue(path: Path, upstream_base_url: str) -> Path:
    path.write_text(
        f"""[providers."bench"]
base_url = "{upstream_base_url}"
region = "local"

[models."{MODEL}"]
providers = ["bench"]
upstream_model = "fast"
prompt_price_per_million = "0.10"
completion_price_per_million = "0.40"
max_output_tokens = 4096
""",
        encoding="utf-8",
    )
    return path


def gateway_environ(database_url: str, catalogue: Path) -> dict[str, str]:
    """The environment `lowrouter serve` prepares for its workers."""
    return {
        **os.environ,
        "LOWROUTER_DATABASE_URL": database_url,
        "LOWROUTER_CONFIG": str(catalogue),
        "LOWROUTER_TOKEN_PEPPER": PEPPER,
    }


def open_bench_runtime(database_url: str, prepare_schema: bool = True) -> Runtime:
    environ = {"LOWROUTER_TOKEN_PEPPER": PEPPER, "LOWROUTER_DATABASE_URL": database_url}
    return open_runtime(load_settings(environ), prepare_schema=prepare_schema)


@dataclass(frozen=True)
class Tenant:
    account_id: UUID
    key_id: UUID
    token: str


def create_tenant(runtime: Runtime, name: str = "bench") -> Tenant:
    """An account with plenty of credits and an inference key with no daily limit."""
    opened = runtime.app.open_account(name, OPERATOR, credits=CREDITS)
    issued = runtime.app.create_key(opened.account.id, f"{name}-key", Scope(), OPERATOR)
    return Tenant(opened.account.id, issued.key.id, issued.token.value)


# Databases ----------------------------------------------------------------------------------


def admin_conninfo() -> str:
    pg = postgres_parts(PG_ADMIN_URL)
    return f"host={pg['host']} port={pg['port']} user={pg['user']} dbname={pg['dbname']}"


def postgres_available() -> bool:
    try:
        import psycopg

        psycopg.connect(admin_conninfo(), connect_timeout=3).close()
        return True
    except Exception:
        return False


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards (with any connections still open)."""
    import psycopg

    name = f"lowrouter_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    pg = postgres_parts(PG_ADMIN_URL)
    try:
        yield f"postgresql://{pg['user']}@{pg['host']}:{pg['port']}/{name}"
    finally:
        with psycopg.connect(admin_conninfo(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def sqlite_database(directory: Path) -> Iterator[str]:
    path = directory / f"lowrouter-{uuid.uuid4().hex[:8]}.db"
    yield f"sqlite:///{path}"
