"""Commands: serve (the gateway), reconcile (settle stale holds) and projections (read models)."""

import argparse
import logging
import signal
import time
from typing import Any

from infrastructure.background import follow_parent
from infrastructure.cli.context import Context
from infrastructure.cli.errors import Refused
from infrastructure.cli.output import ProgressBar, render_table, when
from infrastructure.observability.logs import configure_logging
from infrastructure.settings import masked_url
from infrastructure.views import iso
from projections import all_projections

log = logging.getLogger("lowrouter.projections")

# Commands: reconcile ------------------------------------------------------------------------------


def reconcile_command(ctx: Context, args: argparse.Namespace) -> None:
    """Settle holds older than the hold timeout at their held amount (what `serve` does every
    30 s), e.g. after every gateway was stopped."""
    settled = ctx.runtime.reconcile()
    timeout = ctx.settings.hold_timeout_seconds
    if ctx.format == "json":
        ctx.json({"settled": settled, "hold_timeout_seconds": timeout})
        return
    holds = "hold" if settled == 1 else "holds"
    ctx.out(f"settled {settled} {holds} older than {timeout:g} s at the held amount")


# Commands: projections --------------------------------------------------------------------------

PROJECTION_COLUMNS = ("NAME", "POSITION", "HEAD", "LAG", "LAST MOVED")


def projection_names() -> list[str]:
    return [projection.name for projection in all_projections()]


def projections_status(ctx: Context, args: argparse.Namespace) -> None:
    """Each read model's position in the event log, the log's head, and the lag between."""
    runtime = ctx.runtime
    statuses = runtime.projections.status()
    data: list[dict[str, Any]] = [
        {
            "name": status.name,
            "position": status.position,
            "head": status.head,
            "lag": status.lag,
            "last_moved_at": iso(status.moved_at),
        }
        for status in statuses
    ]
    database = masked_url(ctx.settings.database_url)
    if ctx.format == "json":
        ctx.json({"data": data, "database": database})
        return
    rows = [
        [p["name"], str(p["position"]), str(p["head"]), str(p["lag"]), when(p["last_moved_at"])]
        for p in data
    ]
    ctx.out(render_table(PROJECTION_COLUMNS, rows))
    ctx.note(f"database {database}")


def projections_rebuild(ctx: Context, args: argparse.Namespace) -> None:
    """Drop read models and build them again from the log, while gateways keep running."""
    from projections.rebuild import rebuild

    runner = ctx.runtime.projections
    names = [args.name] if args.name else list(runner.projections)
    rebuilt: list[dict[str, Any]] = []
    for name in names:
        started = time.monotonic()
        bar = ProgressBar(ctx.stderr, name)
        bar.update(name, 0, runner.head())
        events = rebuild(runner, name, progress=bar.update)
        bar.finish()
        rebuilt.append(
            {
                "name": name,
                "events": events,
                "position": runner.position(name),
                "seconds": round(time.monotonic() - started, 3),
            }
        )
    if ctx.format == "json":
        ctx.json({"data": rebuilt})
        return
    rows = [
        [r["name"], str(r["events"]), str(r["position"]), f"{r['seconds']:.2f}"] for r in rebuilt
    ]
    ctx.out(render_table(("NAME", "EVENTS APPLIED", "POSITION", "SECONDS"), rows))


def projections_run(ctx: Context, args: argparse.Namespace) -> int | None:
    """Follow the log in the foreground until Ctrl-C (or SIGTERM): the projections, the
    reconciler and the tamper-evidence chain, as `lowrouter serve` runs them beside its workers.
    Exit 1 if a projection fails."""
    follow_parent()  # started by `serve`: end with it
    ctx.role = "background"
    log_format = ctx.settings.log_format
    configure_logging(log_format)
    note = ctx.note if log_format == "text" else lambda text: log.info(text)
    runner = ctx.runtime.projections
    # The handler only appends to a list: a signal arriving while another handler runs (serve
    # stops us and, as it exits, the kernel signals us again) must not wait on a lock. SIGINT is
    # handled the same way, also when started with it ignored (a script's background job).
    terminated: list[int] = []
    previous = {
        number: signal.signal(number, lambda got, _frame: terminated.append(got))
        for number in (signal.SIGTERM, signal.SIGINT)
    }
    ctx.runtime.start_background()
    note("following the event log; Ctrl-C to stop")
    try:
        while not terminated:
            time.sleep(0.2)
            if runner.failure is not None:
                raise Refused(str(runner.failure))
    finally:
        runner.stop()
        for number, handler in previous.items():
            signal.signal(number, handler)
    positions_now = ", ".join(f"{s.name} {s.position}" for s in runner.status())
    note(f"stopped at {positions_now}")
    return None


# Commands: the gateway --------------------------------------------------------------------------


def serve(ctx: Context, args: argparse.Namespace) -> int:
    try:
        from infrastructure.server import serve as serve_gateway
    except ModuleNotFoundError as missing:
        if missing.name != "infrastructure.server":
            raise
        raise Refused("the gateway server is not built yet") from None
    return int(serve_gateway(ctx.settings, args.host, args.port, args.workers) or 0)
