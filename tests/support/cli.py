"""Running the real `lowrouter` executable in a subprocess, against one test database."""

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOWROUTER = Path(sys.executable).parent / "lowrouter"
PEPPER = "cli-test-pepper-not-secret"


@dataclass(frozen=True)
class Run:
    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def error_lines(self) -> list[str]:
        return self.stderr.strip().splitlines()


class Cli:
    """`cli("keys", "list", ...)` runs `lowrouter keys list ...` against one test database."""

    def __init__(self, database_url: str, home: Path) -> None:
        self.database_url = database_url
        self.home = home

    def environment(self, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOWROUTER_")}
        env.update(
            LOWROUTER_TOKEN_PEPPER=PEPPER,
            LOWROUTER_DATA_DIR=str(self.home),
            LOWROUTER_DATABASE_URL=self.database_url,
        )
        env.update(overrides)
        return env

    def __call__(
        self, *args: str, cwd: Path | None = None, env: Mapping[str, str] | None = None
    ) -> Run:
        completed = subprocess.run(
            [str(LOWROUTER), *args],
            cwd=cwd or self.home,
            env=dict(env) if env is not None else self.environment(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return Run(tuple(args), completed.returncode, completed.stdout, completed.stderr)

    def ok(self, *args: str, cwd: Path | None = None) -> Run:
        result = self(*args, cwd=cwd)
        assert result.code == 0, f"lowrouter {' '.join(args)} -> {result.code}: {result.stderr}"
        return result

    def ok_json(self, *args: str, cwd: Path | None = None) -> Any:
        return self.ok(*args, "--format", "json", cwd=cwd).json()

    def fails(self, code: int, *args: str) -> Run:
        """A refusal or usage error: the exit code, and one clear line on stderr, no traceback."""
        result = self(*args)
        assert result.code == code, (
            f"lowrouter {' '.join(args)} -> {result.code}, expected {code}: {result.stderr}"
        )
        assert len(result.error_lines) == 1, result.stderr
        assert result.error_lines[0].startswith("lowrouter: "), result.stderr
        assert "Traceback" not in result.stderr
        assert result.stdout == ""
        return result
