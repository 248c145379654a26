"""Commands: verify, tamper evidence from the event log's hash chain."""

import argparse
from pathlib import Path

from infrastructure.chain.encoding import ChainError, Checkpoint, VerifyReport
from infrastructure.chain.store import catch_up_chain, verify_against, write_checkpoint
from infrastructure.chain.store import verify as verify_chain
from infrastructure.cli.context import Context
from infrastructure.cli.errors import Refused
from infrastructure.cli.output import render_record

# Commands: verify (tamper evidence) -------------------------------------------------------------


def verify_command(ctx: Context, args: argparse.Namespace) -> int | None:
    """Check the event log against its hash chain (infrastructure/chain): name the first position
    where an event was altered, removed, reordered or inserted. With --against, prove the log up
    to a checkpoint kept outside the database is unchanged; with --checkpoint, write one."""
    runtime = ctx.runtime
    try:
        if args.against is not None:
            report = verify_against(runtime, args.against)
        else:
            catch_up_chain(runtime)
            report = verify_chain(runtime)
        checkpoint = None
        if report.ok and args.checkpoint is not None:
            checkpoint = write_checkpoint(runtime, args.checkpoint)
    except ChainError as error:
        raise Refused(str(error)) from None
    _show_verification(ctx, report, checkpoint, args.checkpoint)
    if not report.ok:
        if args.checkpoint is not None:
            ctx.note("no checkpoint was written: the log fails verification")
        return 1
    return None


def _show_verification(
    ctx: Context, report: VerifyReport, checkpoint: Checkpoint | None, path: str | None
) -> None:
    written = None
    if checkpoint is not None and path is not None:  # a checkpoint is written only to a path
        written = {**checkpoint.to_json(), "path": str(Path(path).resolve())}
    if ctx.format == "json":
        ctx.json(
            {
                "ok": report.ok,
                "kind": report.kind,
                "position": report.position,
                "message": report.message,
                "checked": report.checked,
                "through": report.chained,
                "checkpoint": written,
            }
        )
        return
    pairs = [
        ("result", report.kind),
        ("first difference", str(report.position) if report.position is not None else "-"),
        ("events checked", str(report.checked)),
        ("through position", str(report.chained)),
        ("", report.message),
    ]
    if written is not None:
        pairs += [
            ("checkpoint", written["path"]),
            ("checkpoint digest", f"{written['digest']} at position {written['position']}"),
        ]
    ctx.out(render_record(pairs))
    if written is not None:
        ctx.note(
            "keep the checkpoint outside the database; 'lowrouter verify --against FILE' "
            "proves the log up to it is unchanged"
        )
