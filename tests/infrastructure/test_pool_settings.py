"""The connection settings of "Running on many hosts": read once, checked, with clear errors."""

import pytest

from infrastructure.settings import SettingsError, load_settings

PG = "postgresql://lowrouter@pgbouncer:6432/lowrouter"
DIRECT = "postgresql://lowrouter@primary:5432/lowrouter"


def settings(**env: str):  # type: ignore[no-untyped-def]
    return load_settings({"LOWROUTER_TOKEN_PEPPER": "p", **env}, database_url=PG)


def test_defaults_are_a_small_pool_straight_to_postgresql_listening_there() -> None:
    s = settings()
    assert s.db_pool_size == 4
    assert s.database_pooler == "none"
    assert s.direct_database_url is None
    assert s.listen_url == PG
    assert s.application_name is None
    assert s.reconcile_interval_seconds == 30.0


def test_behind_transaction_pooling_the_runner_listens_on_the_direct_url_or_polls() -> None:
    assert settings(LOWROUTER_DATABASE_POOLER="transaction").listen_url is None
    direct = settings(LOWROUTER_DATABASE_POOLER="transaction", LOWROUTER_DIRECT_DATABASE_URL=DIRECT)
    assert direct.listen_url == DIRECT
    assert settings(LOWROUTER_DATABASE_POOLER="session").listen_url == PG


def test_values_are_read() -> None:
    s = settings(
        LOWROUTER_DB_POOL_SIZE="7",
        LOWROUTER_APPLICATION_NAME="lowrouter-host3",
        LOWROUTER_RECONCILE_INTERVAL_SECONDS="5",
    )
    assert (s.db_pool_size, s.application_name, s.reconcile_interval_seconds) == (
        7,
        "lowrouter-host3",
        5.0,
    )


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"LOWROUTER_DB_POOL_SIZE": "1"}, "LOWROUTER_DB_POOL_SIZE must be at least 2"),
        ({"LOWROUTER_DB_POOL_SIZE": "many"}, "LOWROUTER_DB_POOL_SIZE='many'"),
        ({"LOWROUTER_DATABASE_POOLER": "pgpool"}, "none, session, transaction"),
        ({"LOWROUTER_DIRECT_DATABASE_URL": "sqlite:///x.db"}, "LOWROUTER_DIRECT_DATABASE_URL"),
        ({"LOWROUTER_RECONCILE_INTERVAL_SECONDS": "0"}, "must be positive"),
    ],
)
def test_a_bad_value_is_refused_with_a_line_naming_it(env: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names.replace("(", r"\(")) as refused:
        settings(**env)
    assert "\n" not in str(refused.value)
