"""`cli`: the `lowrouter` CLI run in this process (`main(argv)`) on the parametrised store;
`executable`: the installed script in a subprocess on the same database, for the tests about
the script itself."""

from pathlib import Path

import pytest

from tests.support.cli import Cli, Executable


@pytest.fixture
def cli(database_url: str, tmp_path: Path) -> Cli:
    home = tmp_path / "home"
    home.mkdir()
    return Cli(database_url, home)


@pytest.fixture
def executable(cli: Cli) -> Executable:
    return Executable(cli.database_url, cli.home)
