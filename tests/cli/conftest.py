"""Running the real `lowrouter` executable in a subprocess, on the parametrised store."""

from pathlib import Path

import pytest

from tests.support.cli import CATALOGUE, LOWROUTER, PEPPER, Cli, Run  # noqa: F401  (kept importable from here for tests written before tests/support)


@pytest.fixture
def cli(database_url: str, tmp_path: Path) -> Cli:
    home = tmp_path / "home"
    home.mkdir()
    return Cli(database_url, home)
