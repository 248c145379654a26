"""Running `lowrouter` against one test database: `main(argv)` in this process (`Cli`, what the
CLI tests use: a subprocess costs seconds of imports per command), or the real executable in a
subprocess (`Executable`, for the few tests about the installed script itself)."""

import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

from infrastructure import cli as cli_module

LOWROUTER = Path(sys.executable).parent / "lowrouter"
PEPPER = "cli-test-pepper-not-secret"
# The catalogue the CLI checks scopes against (`keys create/scope` refuse what it does not serve).
CATALOGUE = """
[providers."p-eu"]
base_url = "http://127.0.0.1:9/v1"
region = "eu"
[providers."p-us"]
base_url = "http://127.0.0.1:9/v1"
region = "us"
""" + "".join(
    f'[models."{model}"]\nproviders = ["p-eu", "p-us"]\n'
    'prompt_price_per_million = "1"\ncompletion_price_per_million = "2"\n'
    "max_output_tokens = 1000\n"
    for model in ("openai/gpt-4o", "a/one", "a/two", "b/x", "c/d", "lowrouter/echo")
)


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
    """`cli("keys", "list", ...)` runs `lowrouter keys list ...` against one test database, as
    `main(argv)` in this process: the environment is exactly `environment()` (or `env`), the
    working directory `cwd`, stdin `stdin`, and stdout/stderr are captured."""

    def __init__(self, database_url: str, home: Path) -> None:
        self.database_url = database_url
        self.home = home
        self.catalogue = home / "lowrouter.toml"
        self.catalogue.write_text(CATALOGUE)

    def environment(self, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOWROUTER_")}
        env.update(
            LOWROUTER_TOKEN_PEPPER=PEPPER,
            LOWROUTER_DATA_DIR=str(self.home),
            LOWROUTER_DATABASE_URL=self.database_url,
            LOWROUTER_CONFIG=str(self.catalogue),
        )
        env.update(overrides)
        return env

    def __call__(
        self,
        *args: str,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        stdin: str = "",
    ) -> Run:
        stdout, stderr = io.StringIO(), io.StringIO()
        environment = dict(env) if env is not None else self.environment()
        with (
            mock.patch.dict(os.environ, environment, clear=True),
            mock.patch.object(sys, "stdin", io.StringIO(stdin)),
            contextlib.chdir(cwd or self.home),
            contextlib.redirect_stdout(stdout),
            contextlib.redirect_stderr(stderr),
        ):
            code = cli_module.main(list(args))
        return Run(tuple(args), code, stdout.getvalue(), stderr.getvalue())

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


class Executable(Cli):
    """As `Cli`, but the installed `lowrouter` script in a subprocess: for the tests about the
    real executable (its exit codes, its stderr, a process of its own)."""

    def __call__(
        self,
        *args: str,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        stdin: str = "",
    ) -> Run:
        completed = subprocess.run(
            [str(LOWROUTER), *args],
            cwd=cwd or self.home,
            env=dict(env) if env is not None else self.environment(),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return Run(tuple(args), completed.returncode, completed.stdout, completed.stderr)
