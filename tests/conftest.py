"""Shared fixtures: every application test runs on SQLite and on PostgreSQL.

PostgreSQL tests get a fresh database each (created from the server at 127.0.0.1:5432 and dropped
afterwards). Under CI=true a missing PostgreSQL fails the test instead of skipping it.
"""

import os
import uuid
from collections.abc import Iterator

import pytest

PG_ADMIN_URL = os.environ.get("LOWROUTER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
PEPPER = "test-pepper-not-secret"


def _pg_admin_conninfo() -> str:
    from infrastructure.settings import postgres_parts

    pg = postgres_parts(PG_ADMIN_URL)
    return f"host={pg['host']} port={pg['port']} user={pg['user']} dbname={pg['dbname']}"


def _require_postgres() -> None:
    import psycopg

    try:
        psycopg.connect(_pg_admin_conninfo(), connect_timeout=3).close()
    except psycopg.OperationalError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required under CI=true and is not reachable: {error}")
        pytest.skip(f"PostgreSQL not reachable: {error}")


def _database_url(name: str) -> str:
    from infrastructure.settings import postgres_parts

    pg = postgres_parts(PG_ADMIN_URL)
    return f"postgresql://{pg['user']}@{pg['host']}:{pg['port']}/{name}"


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A database with lowrouter's schema, copied for each test (creating the schema anew
    for every test costs about half a second)."""
    import psycopg

    from infrastructure.runtime import open_runtime
    from infrastructure.settings import load_settings

    _require_postgres()
    name = f"lrt_template_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_pg_admin_conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    runtime = open_runtime(
        load_settings({"LOWROUTER_TOKEN_PEPPER": PEPPER}, database_url=_database_url(name))
    )
    runtime.close()
    yield name
    with psycopg.connect(_pg_admin_conninfo(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url(postgres_template: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one test: lowrouter's schema, no data."""
    import psycopg

    name = f"lrt_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(_pg_admin_conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{postgres_template}"')
    yield _database_url(name)
    with psycopg.connect(_pg_admin_conninfo(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: "os.PathLike[str]") -> str:
    return f"sqlite:///{tmp_path}/lowrouter.db"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Parametrises a test over both stores."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def settings(database_url: str, tmp_path: "os.PathLike[str]"):  # type: ignore[no-untyped-def]
    from infrastructure.settings import load_settings

    return load_settings(
        {"LOWROUTER_TOKEN_PEPPER": PEPPER, "LOWROUTER_DATA_DIR": str(tmp_path)},
        database_url=database_url,
    )


@pytest.fixture
def ledger(settings):  # type: ignore[no-untyped-def]
    """The application on the parametrised store."""
    from infrastructure.persistence import build_ledger

    app = build_ledger(settings)
    yield app
    app.close()
