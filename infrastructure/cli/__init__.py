"""The operator CLI, `lowrouter`: parse, call one application method, render.

Every command is one small function `(Context, Namespace)` that returns None (exit 0) or an exit
code, registered on the parser with `_command(...)`. Output is a table for people or, with
`--format json`, the API.md shapes for scripts. Tokens are printed once, on creation, to stdout
(or written to an `--env-file`), and never anywhere else: lists and views show `display`.

Exit codes:
  0  ok
  1  refused: the domain said no (unknown account or key, revoking a revoked key, a negative,
     zero-where-positive or non-numeric amount, a bad name or scope), or the command failed;
     or a check found something: `audit --verify-balances` a difference between the events and
     the read models, `verify` a tampered log, `investigate --revoke` several matching keys
  2  usage error: unknown command or option, a missing argument, a malformed key id (not a
     UUID), a --format the command does not offer, bad configuration (SettingsError)

Amounts are decimal strings checked by the domain (`parse_credits`), so a bad amount is a
refusal (1), exactly as the management API refuses it. Errors are one line on stderr, prefixed
`lowrouter: `, with any token-shaped text reduced to its display form.

The auditors' commands (`audit`, `verify`) read the event log itself; `investigate` and `usage`
read the read models (brought up to date first). A token given to `investigate` or `audit` (or
read from stdin with `-`) is hashed and looked up, never printed or stored.

The package, a module per purpose:
  app          main: run one command, errors to one line on stderr and an exit code
  parser       the argparse parser: every command, its options and formats
  context      Context: what every command gets
  errors       UsageError (2), Refused (1), keeping tokens and passwords out of messages
  arguments    argparse types: key ids, times, amounts, counts, seconds
  output       tables, records, times, event details, the progress bar
  shapes       accounts and keys as the management API shapes them
  accounts     accounts create/list/show, credits add/adjust
  keys         keys create/list/show/scope/rename/revoke/rotate
  env_file     keys create --env-file
  usage        usage
  finding      a key from a token, a display or a key id
  audit        audit, audit --verify-balances
  investigate  investigate
  verify       verify
  operations   serve, reconcile, projections
"""

from infrastructure.cli.app import main

__all__ = ["main"]
