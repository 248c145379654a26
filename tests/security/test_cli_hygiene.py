"""Operator-side hygiene: outside text cannot drive the terminal, --env-file refuses symlinks and
files others can read, database files are created 0600, uvicorn believes forwarded headers only
from trusted proxies."""

import os
import stat
from pathlib import Path

import pytest

from infrastructure.server import proxy_options
from infrastructure.settings import load_settings
from tests.support.cli import Cli


@pytest.fixture
def sqlite_cli(sqlite_url: str, tmp_path: Path) -> Cli:
    home = tmp_path / "home"
    home.mkdir()
    return Cli(sqlite_url, home)


def test_a_revoke_reason_with_escapes_and_newlines_is_printed_escaped(sqlite_cli: Cli) -> None:
    cli = sqlite_cli
    cli.ok("accounts", "create", "acme")
    key = cli.ok_json("keys", "create", "--account", "acme", "--name", "k")["data"]["id"]
    cli.ok("keys", "revoke", key, "--reason", "fine\nFAKE LINE revoked_by root\x1b[31mred")
    shown = cli.ok("audit", key)
    assert "\x1b" not in shown.stdout and "\\x1b[31m" in shown.stdout
    assert not any(line.startswith("FAKE LINE") for line in shown.stdout.splitlines())
    assert "fine\\nFAKE LINE" in shown.stdout


def test_env_file_refuses_symlinks_and_loose_files_unless_forced(
    sqlite_cli: Cli, tmp_path: Path
) -> None:
    cli = sqlite_cli
    cli.ok("accounts", "create", "acme")
    create = ("keys", "create", "--account", "acme", "--name", "k", "--env-file")
    target = tmp_path / "elsewhere.env"
    target.touch(mode=0o600)
    link = tmp_path / "link.env"
    link.symlink_to(target)
    assert "symbolic link" in cli.fails(1, *create, str(link)).stderr
    loose = tmp_path / "loose.env"
    loose.touch()
    loose.chmod(0o644)
    assert "readable by others" in cli.fails(1, *create, str(loose)).stderr
    assert target.read_text() == loose.read_text() == ""  # nothing written, no key lost
    cli.ok(*create, str(loose), "--force-env-file")
    assert loose.read_text().startswith("LOWROUTER_API_KEY=lr-sk-")


def test_a_new_sqlite_database_is_created_0600(tmp_path: Path) -> None:
    from infrastructure.runtime import open_runtime
    from tests.support.stores import PEPPER

    old = os.umask(0o022)
    try:
        path = tmp_path / "fresh.db"
        settings = load_settings(
            {"LOWROUTER_TOKEN_PEPPER": PEPPER, "LOWROUTER_DATA_DIR": str(tmp_path)},
            database_url=f"sqlite:///{path}",
        )
        open_runtime(settings).close()
    finally:
        os.umask(old)
    for file in [path, *tmp_path.glob("fresh.db-*")]:
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file


def test_uvicorn_believes_forwarded_headers_only_from_trusted_proxies(tmp_path: Path) -> None:
    def options(**env: str) -> dict[str, object]:
        base = {"LOWROUTER_TOKEN_PEPPER": "p", "LOWROUTER_DATA_DIR": str(tmp_path)}
        return proxy_options(load_settings({**base, **env}, database_url="sqlite:///x.db"))

    assert options() == {"proxy_headers": False, "forwarded_allow_ips": None}
    trusted = options(LOWROUTER_TRUSTED_PROXIES="10.0.0.0/8, 192.168.1.1")
    assert trusted["proxy_headers"] is True
    assert "10.0.0.0/8" in str(trusted["forwarded_allow_ips"])
