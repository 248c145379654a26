"""The test databases: the PostgreSQL server the suite uses and the token pepper of test data."""

import os

import pytest

PG_ADMIN_URL = os.environ.get("LOWROUTER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
PEPPER = "test-pepper-not-secret"


def pg_admin_conninfo() -> str:
    from infrastructure.settings import postgres_parts

    pg = postgres_parts(PG_ADMIN_URL)
    return f"host={pg['host']} port={pg['port']} user={pg['user']} dbname={pg['dbname']}"


def require_postgres() -> None:
    import psycopg

    try:
        psycopg.connect(pg_admin_conninfo(), connect_timeout=3).close()
    except psycopg.OperationalError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required under CI=true and is not reachable: {error}")
        pytest.skip(f"PostgreSQL not reachable: {error}")


def database_url_named(name: str) -> str:
    from infrastructure.settings import postgres_parts

    pg = postgres_parts(PG_ADMIN_URL)
    return f"postgresql://{pg['user']}@{pg['host']}:{pg['port']}/{name}"
