"""Entry point: run one command, turn errors into one line on stderr and an exit code."""

import sys
from collections.abc import Sequence

from infrastructure.cli.context import PROG, Context
from infrastructure.cli.errors import Refused, UsageError, one_line
from infrastructure.cli.parser import parse_arguments
from infrastructure.error_table import ANSWERED, cli_line
from infrastructure.settings import SettingsError

# Entry point ------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (0 ok, 1 refused, 2 usage error)."""
    try:
        args = parse_arguments(argv)
    except UsageError as error:
        return _fail(str(error), 2)
    except SystemExit as exit_request:  # --help
        return exit_request.code if isinstance(exit_request.code, int) else 0
    context = Context(args)
    try:
        return args.handler(context, args) or 0
    except (UsageError, SettingsError) as error:
        return _fail(str(error), 2)
    except ANSWERED as error:  # the one error table (infrastructure.error_table)
        code, message = cli_line(error)
        return _fail(message, code)
    except Refused as error:
        return _fail(str(error) or type(error).__name__, 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as error:  # one line, never a traceback
        return _fail(f"{type(error).__name__}: {error}", 1)
    finally:
        _close_quietly(context)


def _close_quietly(context: Context) -> None:
    try:
        context.close()
    except Exception as error:
        _fail(f"while closing the database: {type(error).__name__}: {error}", 1)


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: {one_line(message)}", file=sys.stderr)
    return code
