"""Command: scan — find lowrouter tokens in files, or in every commit of a git history.

Offline by default: a token counts only if its checksum matches (domain/token_scan.py), so
nothing that merely looks like a key is reported. Only the display form is printed, never the
token. `--check` looks each token up in the database (key id, name, status); `--revoke` records
the find on each live key and revokes it with reason `leak`. Exit 1 when any token was found.

With `--git`, each PATH is a repository (default: the current directory) and every commit of
`git log --all` is read as the lines it added, so a token removed long ago is still found, with
the commit that added it.
"""

import argparse
import os
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from application.leaks import handle_leak
from domain.actor import Actor
from domain.token_scan import find_tokens
from domain.tokens import Token, TokenKind, hash_token
from infrastructure.cli.context import Context
from infrastructure.cli.errors import Refused
from infrastructure.cli.output import render_table
from projections.queries.forensics import match_of_token_hash

SKIP_DIRECTORIES = frozenset({".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv"})
MiB = 1024 * 1024


@dataclass(frozen=True)
class Hit:
    path: str
    line: int
    token: Token
    commit: str | None = None

    @property
    def where(self) -> str:
        place = f"{self.path}:{self.line}"
        return f"{self.commit[:12]}:{place}" if self.commit else place


@dataclass
class Scan:
    hits: list[Hit] = field(default_factory=list)
    files: int = 0
    bytes: int = 0


def scan_command(ctx: Context, args: argparse.Namespace) -> int | None:
    started = time.perf_counter()
    scan = Scan()
    paths = args.paths or ["."]
    if args.git:
        for repository in paths:
            scan_history(ctx, Path(repository), scan)
    else:
        for path in walk(ctx, paths):
            scan_file(ctx, path, scan)
    seconds = max(time.perf_counter() - started, 1e-9)
    keys = look_up(ctx, scan.hits) if (args.check or args.revoke) else {}
    revoked = revoke(ctx, scan.hits, keys) if args.revoke else set()
    render(ctx, scan, keys, revoked)
    what = "commits' added lines" if args.git else f"{scan.files} files"
    ctx.note(
        f"scanned {what}, {scan.bytes / MiB:.1f} MiB in {seconds:.2f} s "
        f"({scan.bytes / MiB / seconds:.0f} MiB/s): {len(scan.hits)} token(s) found"
    )
    return 1 if scan.hits else None


# Files ------------------------------------------------------------------------------------------


def walk(ctx: Context, paths: Iterable[str]) -> Iterator[Path]:
    for given in paths:
        path = Path(given)
        if path.is_file():
            yield path
        elif path.is_dir():
            for root, directories, files in os.walk(path):
                directories[:] = sorted(d for d in directories if d not in SKIP_DIRECTORIES)
                for name in sorted(files):
                    yield Path(root) / name
        else:
            ctx.warn(f"{given}: no such file or directory")


def scan_file(ctx: Context, path: Path, scan: Scan) -> None:
    try:
        data = path.read_bytes()
    except OSError as error:
        ctx.warn(f"{path}: cannot be read ({error.strerror})")
        return
    scan.files += 1
    scan.bytes += len(data)
    for found in find_tokens(data):
        scan.hits.append(Hit(str(path), found.line_in(data), found.token))


# Git history ------------------------------------------------------------------------------------


def scan_history(ctx: Context, repository: Path, scan: Scan) -> None:
    """Every line every commit added (`git log --all -p -U0`), with its commit, file and line."""
    command = [
        "git", "-C", str(repository), "log", "--all", "-p", "-U0", "--no-color", "--no-renames",
        "--no-ext-diff", "--no-textconv", "--text", "--format=commit %H",
    ]  # fmt: skip
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise Refused("--git needs the git command") from None
    assert process.stdout is not None
    commit, path, line = None, "", 0
    for raw in process.stdout:
        scan.bytes += len(raw)
        if raw.startswith(b"commit ") and len(raw) in (48, 49):  # 40 hex (SHA-1), a newline
            commit = raw[7:47].decode()
        elif raw.startswith(b"+++ "):
            name = raw[4:].rstrip(b"\n").decode("utf-8", "replace")
            path = name[2:] if name.startswith("b/") else name
        elif raw.startswith(b"@@ "):
            line = _new_start(raw)
        elif raw.startswith(b"+"):
            if b"lr-" in raw:
                for found in find_tokens(raw[1:]):
                    scan.hits.append(Hit(path, line, found.token, commit))
            line += 1
    error = process.stderr.read().decode(errors="replace") if process.stderr else ""
    if process.wait() != 0:
        raise Refused(f"git log failed in {repository}: {error.strip()[:200]}")


def _new_start(hunk: bytes) -> int:
    """`@@ -a,b +c,d @@`: the first new line, c."""
    try:
        plus = hunk.split(b" ")[2]
        return int(plus[1:].split(b",")[0])
    except (IndexError, ValueError):
        return 0


# The database -----------------------------------------------------------------------------------


def look_up(ctx: Context, hits: list[Hit]) -> dict[str, Any]:
    """Token hash -> the key it belongs to (or None), each distinct token looked up once."""
    runtime = ctx.runtime
    found: dict[str, Any] = {}
    for hit in hits:
        digest = hash_token(runtime.settings.pepper, hit.token)
        if digest not in found:
            found[digest] = runtime.reads.ask(match_of_token_hash, digest)
    return found


def revoke(ctx: Context, hits: list[Hit], keys: dict[str, Any]) -> set[str]:
    """Record each find on its live inference key and revoke it (reason `leak`)."""
    pepper = ctx.runtime.settings.pepper
    actor = Actor("operator", f"{ctx.actor.name} (lowrouter scan)")
    revoked: set[str] = set()
    for hit in hits:
        match = keys.get(hash_token(pepper, hit.token))
        if match is None or match.kind is not TokenKind.INFERENCE:
            continue
        outcome = handle_leak(
            ctx.runtime.app, UUID(match.key_id), hit.where, "lowrouter scan", actor, "revoke"
        )
        if outcome.revoked_now:
            revoked.add(match.key_id)
    return revoked


# Output -----------------------------------------------------------------------------------------


def render(ctx: Context, scan: Scan, keys: dict[str, Any], revoked: set[str]) -> None:
    pepper = ctx.runtime.settings.pepper if keys else b""
    rows = []
    for hit in scan.hits:
        match = keys.get(hash_token(pepper, hit.token)) if keys else None
        row: dict[str, Any] = {
            "file": hit.path,
            "line": hit.line,
            "display": hit.token.display,
            "commit": hit.commit,
        }
        if keys:
            row["key"] = (
                None
                if match is None
                else {
                    "id": match.key_id,
                    "name": match.name,
                    "status": "revoked" if match.key_id in revoked else match.status,
                    "revoked_now": match.key_id in revoked,
                }
            )
        rows.append(row)
    if ctx.format == "json":
        ctx.json({"data": rows, "bytes_scanned": scan.bytes})
        return
    if not rows:
        ctx.out("no lowrouter tokens found")
        return
    header = ["where", "token"] + (["key", "name", "status"] if keys else [])
    table = []
    for hit, row in zip(scan.hits, rows, strict=True):
        cells = [hit.where, row["display"]]
        if keys:
            key = row["key"]
            cells += (
                ["(not a key of this gateway)", "", ""]
                if key is None
                else [
                    key["id"],
                    key["name"],
                    key["status"] + (" (now)" if key["revoked_now"] else ""),
                ]
            )
        table.append(cells)
    ctx.out(render_table(header, table))
