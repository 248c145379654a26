"""Settings: the server secret is generated once, kept with 0600 permissions, and reused."""

import stat
from pathlib import Path

import pytest

from infrastructure.settings import (
    SettingsError,
    is_postgres_url,
    load_settings,
    postgres_conninfo,
)


def test_without_a_pepper_one_is_generated_once_into_the_data_dir_with_0600(
    tmp_path: Path,
) -> None:
    env = {"LOWROUTER_DATA_DIR": str(tmp_path)}
    first = load_settings(env, database_url=f"sqlite:///{tmp_path}/lowrouter.db")
    pepper_file = tmp_path / "token_pepper"
    assert stat.S_IMODE(pepper_file.stat().st_mode) == 0o600
    assert len(first.pepper) >= 32
    again = load_settings(env, database_url=f"sqlite:///{tmp_path}/lowrouter.db")
    assert again.pepper == first.pepper


def test_an_explicit_pepper_wins_and_writes_no_file(tmp_path: Path) -> None:
    settings = load_settings(
        {"LOWROUTER_DATA_DIR": str(tmp_path), "LOWROUTER_TOKEN_PEPPER": "from-the-vault"},
        database_url=f"sqlite:///{tmp_path}/lowrouter.db",
    )
    assert settings.pepper == b"from-the-vault"
    assert not (tmp_path / "token_pepper").exists()


def test_the_default_database_is_sqlite_in_the_working_directory(tmp_path: Path) -> None:
    settings = load_settings({"LOWROUTER_TOKEN_PEPPER": "x"})
    assert settings.database_url == "sqlite:///lowrouter.db"


@pytest.mark.parametrize("url", ["mysql://x/y", "sqlite://", "postgresql://host", "nonsense"])
def test_a_bad_database_url_is_refused_with_one_clear_line(url: str) -> None:
    with pytest.raises(SettingsError, match="LOWROUTER_DATABASE_URL"):
        load_settings({"LOWROUTER_TOKEN_PEPPER": "x"}, database_url=url)


@pytest.mark.parametrize(
    ("url", "postgres"),
    [("postgresql://u@h:5432/db", True), ("postgres://u@h/db", True),
     ("sqlite:///lowrouter.db", False), ("sqlite:///postgresql://x", False),
     ("mysql://u@h/db", False)],
)  # fmt: skip
def test_one_rule_says_which_urls_are_postgresql(url: str, postgres: bool) -> None:
    assert is_postgres_url(url) is postgres


def test_the_conninfo_asks_for_client_keepalives_unless_the_url_sets_them() -> None:
    """A gateway waiting on a vanished PostgreSQL (or PgBouncer) host finds it dead in seconds:
    libpq's keepalives and tcp_user_timeout, the URL's own values winning."""
    fields = dict(
        part.split("=", 1) for part in postgres_conninfo("postgresql://u:pw@db:6432/lr").split()
    )
    assert fields == {
        "host": "db", "port": "6432", "user": "u", "dbname": "lr", "password": "pw",
        "keepalives": "1", "keepalives_idle": "5", "keepalives_interval": "1",
        "keepalives_count": "3", "tcp_user_timeout": "10000",
    }  # fmt: skip
    url = "postgresql://u@db/lr?keepalives_idle=30&tcp_user_timeout=0"
    own = dict(part.split("=", 1) for part in postgres_conninfo(url).split())
    assert (own["keepalives_idle"], own["tcp_user_timeout"], own["keepalives_count"]) == (
        "30",
        "0",
        "3",
    )


def test_a_keepalive_parameter_that_is_not_a_number_is_refused_at_start() -> None:
    with pytest.raises(SettingsError, match="keepalives_idle"):
        load_settings(
            {"LOWROUTER_TOKEN_PEPPER": "x"},
            database_url="postgresql://u@db/lr?keepalives_idle=5 sslmode=disable",
        )


@pytest.mark.parametrize("lease", ["1e-9", "0.05", "0.19"])
def test_a_leadership_lease_too_short_to_renew_is_refused(lease: str) -> None:
    with pytest.raises(SettingsError, match=r"LOWROUTER_LEADERSHIP_LEASE_SECONDS.*at least 0\.2 s"):
        load_settings({"LOWROUTER_TOKEN_PEPPER": "x", "LOWROUTER_LEADERSHIP_LEASE_SECONDS": lease})


def test_a_leadership_lease_at_the_floor_is_taken() -> None:
    env = {"LOWROUTER_TOKEN_PEPPER": "x", "LOWROUTER_LEADERSHIP_LEASE_SECONDS": "0.2"}
    assert load_settings(env).leadership_lease_seconds == 0.2
