"""Context: what every command gets (arguments, settings, the runtime opened on first use).

And its output: lines on stdout, warnings and notes on stderr, JSON.
"""

import argparse
import getpass
import sys
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

import orjson

from domain.actor import Actor
from infrastructure.cli.errors import Refused, without_password
from infrastructure.cli.escaping import printable
from infrastructure.runtime import Runtime, open_runtime
from infrastructure.settings import Settings, load_settings

PROG = "lowrouter"


# Context: what every command gets ---------------------------------------------------------------


@dataclass
class Context:
    args: argparse.Namespace
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    _settings: Settings | None = field(default=None, init=False)
    _runtime: Runtime | None = field(default=None, init=False)
    role: str = field(default="cli", init=False)  # names its PostgreSQL connections

    @property
    def format(self) -> str:
        return str(self.args.format)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(database_url=self.args.database_url)
        return self._settings

    @property
    def runtime(self) -> Runtime:
        """The ledger, spend control and projections, opened on first use."""
        if self._runtime is None:
            settings = self.settings
            try:
                self._runtime = open_runtime(settings, role=self.role)
            except Exception as error:
                where = without_password(settings.database_url)
                raise Refused(
                    f"cannot open the database {where}: {type(error).__name__}: {error}"
                ) from error
        return self._runtime

    @property
    def actor(self) -> Actor:
        return Actor("operator", f"cli:{_user_name()}")

    def now(self) -> datetime:
        return self.runtime.app.clock()

    def close(self) -> None:
        if self._runtime is not None:
            runtime, self._runtime = self._runtime, None
            runtime.close()

    # Output ---------------------------------------------------------------------------------

    def out(self, text: str = "") -> None:
        # Last line of defence (tables escape each cell): no terminal escape reaches stdout.
        print(printable(text, keep_newlines=True), file=self.stdout)

    def warn(self, text: str) -> None:
        print(f"{PROG}: warning: {printable(text)}", file=self.stderr)

    def note(self, text: str) -> None:
        print(f"{PROG}: {printable(text)}", file=self.stderr)

    def json(self, data: Any) -> None:
        self.out(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


def _user_name() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in this environment (containers): still record something
        return "unknown"
