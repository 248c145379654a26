"""`python -m bench.run` (`make bench`): lowrouter beside a bare pass-through proxy, on loopback.

Starts a fast fake upstream, the bare proxy (three upstream clients), and lowrouter on SQLite and
PostgreSQL (one worker, and two on PostgreSQL), each on its own port; drives each with wrk at
concurrency 1, 16, 64 and 256, non-streaming and streaming; samples the usage-history lag at
c=64; profiles one lowrouter worker with py-spy; measures ledger writes, projection catch-up and
rebuild, lookups and page replay in-process; prints one table and the targets of issue 8; writes
everything to bench/results/<timestamp>.json. See bench/README.md.
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
# (pip name, import name): what the benchmark itself needs beyond lowrouter's dependencies
BENCH_PACKAGES = (
    ("psutil", "psutil"),
    ("py-spy", None),
    ("aiohttp", "aiohttp"),
    ("httpx-aiohttp", "httpx_aiohttp"),
)


def log(message: str) -> None:
    print(message, flush=True)


def ensure_packages() -> list[str]:
    """pip-install what the benchmark needs and is missing; say what was installed."""
    notes = []
    for pip_name, module in BENCH_PACKAGES:
        present = (
            importlib.util.find_spec(module) is not None
            if module
            else (Path(sys.executable).parent / pip_name).exists()
        )
        if present:
            continue
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", pip_name],
            capture_output=True,
            text=True,
            check=False,
        )
        ok = done.returncode == 0
        notes.append(f"pip install {pip_name}: {'installed' if ok else 'FAILED'}")
        log(notes[-1])
    return notes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="about 2 minutes instead of ~10")
    parser.add_argument("--duration", type=float, help="seconds per measured run")
    parser.add_argument("--events", type=int, help="ledger events for catch-up/rebuild/replay")
    parser.add_argument(
        "--only", help="comma-separated target names (default: all; see bench/README.md)"
    )
    parser.add_argument("--no-ledger", action="store_true", help="skip the in-process figures")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    parser.add_argument(
        "--no-observability",
        action="store_true",
        help="skip the metrics/logging on-vs-off comparison (`--only observability`: only it)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout (e.g. a worktree of main): adds lowrouter-pg@base, its code "
        "under the same interpreter, measured in the same run as this one",
    )
    parser.add_argument("--output", type=Path, help="the JSON file (default: bench/results/…)")
    parser.add_argument(
        "--soak", type=float, help="extra seconds of c=64 load on lowrouter-pg, for memory marks"
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness of every process the benchmark starts (and its own), e.g. -10 on a "
        "machine shared with other work (negative values need root); PostgreSQL keeps its own",
    )
    return parser.parse_args(argv)


def all_targets() -> list[Any]:
    from bench.matrix import Target

    return [
        Target("bare-httpx", "bare", "httpx"),
        Target("bare-httpx-aiohttp", "bare", "httpx-aiohttp"),
        Target("bare-aiohttp", "bare", "aiohttp"),
        # lowrouter calls aiohttp's client directly (infrastructure/upstream.py).
        Target("lowrouter-sqlite", "lowrouter", "aiohttp", "sqlite"),
        Target("lowrouter-pg", "lowrouter", "aiohttp", "postgres"),
        Target("lowrouter-pg-w2", "lowrouter", "aiohttp", "postgres", workers=2),
    ]


def select_targets(only: str | None, postgres: bool, baseline: Path | None = None) -> list[Any]:
    from bench.matrix import Target

    targets = all_targets()
    if baseline is not None:
        base = Target("lowrouter-pg@base", "lowrouter", "aiohttp", "postgres", source=baseline)
        at = next(i for i, t in enumerate(targets) if t.name == "lowrouter-pg")
        targets.insert(at, base)  # just before the one it is compared with
    if only:
        wanted = {name.strip() for name in only.split(",")}
        targets = [t for t in targets if t.name in wanted]
    if not postgres:
        log("PostgreSQL is not reachable: skipping the PostgreSQL targets")
        targets = [t for t in targets if t.store != "postgres"]
    return targets


def profiler(stamp: str, seconds: int, generator: Any) -> Callable[..., dict[str, Any]]:
    """A c=64 non-streaming run with py-spy recording the worker: SVG + collapsed stacks."""
    from bench.profile import format_summary, parse_collapsed, start_recording, summarise

    def profile(server: Any, load: Any) -> dict[str, Any]:
        pid = server.worker_pids()[0]
        raw = RESULTS / f"profile-{stamp}-{server.name}.txt"
        try:
            recorder = start_recording(pid, seconds, raw)
        except RuntimeError as error:
            return {"error": str(error)}
        time.sleep(0.5)
        result = generator.run(load, 64, seconds)
        recorder.wait(timeout=seconds + 30)
        if not raw.exists():
            return {"error": "py-spy wrote nothing (ptrace not permitted?)"}
        summary = summarise(parse_collapsed(raw))
        log(f"profile of {server.name} at c=64 ({result.rps:.0f} req/s under py-spy --gil):")
        log(format_summary(summary))
        return {
            "rps_under_profiler": round(result.rps, 1),
            "collapsed": raw.name,
            **summary,
        }

    return profile


def ledger_section(events: int, lookup_seconds: float, stores: list[str]) -> dict[str, Any]:
    from bench.fixtures import open_bench_runtime, postgres_database, sqlite_database
    from bench.ledger_figures import ledger_figures

    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="lowrouter-bench-") as directory:
        for store in stores:
            log(f"ledger figures on {store}: {events} events")
            database = (
                postgres_database() if store == "postgres" else sqlite_database(Path(directory))
            )
            try:
                with database as url:
                    runtime = open_bench_runtime(url)
                    try:
                        figures[store] = ledger_figures(runtime, events, lookup_seconds)
                    finally:
                        runtime.close()
            except Exception as error:
                figures[store] = {"error": f"{type(error).__name__}: {error}"}
            log(json.dumps(figures[store]))
    return figures


def observability_section(
    args: argparse.Namespace, plan: Any, upstream: Any, postgres: bool
) -> dict[str, Any]:
    """Metrics and logging on vs off (bench/observability.py), unless left out."""
    from bench.observability import observability_cost

    wanted = not args.only or "observability" in {n.strip() for n in args.only.split(",")}
    if args.no_observability or not wanted or not postgres:
        return {}
    try:
        return observability_cost(plan, upstream)
    except Exception as error:  # the other figures still count
        log(f"observability: FAILED: {type(error).__name__}: {error}")
        return {"error": f"{type(error).__name__}: {error}"}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    notes = ensure_packages()
    from bench import observability as bench_observability
    from bench import report
    from bench.fixtures import admin_conninfo, postgres_available
    from bench.loadgen import load_generator
    from bench.matrix import Plan, run_targets, start_upstream
    from bench.probes import storage_probes

    quick = args.quick
    seconds = args.duration or (2.0 if quick else 5.0)
    events = args.events or (20_000 if quick else 100_000)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
        notes.append(f"niceness {args.nice} for the benchmark and every process it started")
    generator = load_generator(args.nice)
    notes.append(f"load generator: {generator.name}")
    postgres = postgres_available()
    targets = select_targets(args.only, postgres, args.baseline)
    description = report.machine()
    description["storage"] = storage_probes(admin_conninfo() if postgres else None)
    log(
        f"lowrouter bench ({'quick' if quick else 'full'}): {seconds:g} s per run; "
        f"{generator.name}; load average {description['load_average_at_start']}"
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lowrouter-bench-") as work, ExitStack() as stack:
        plan = Plan(
            generator,
            seconds,
            warmup=1.0,
            work_dir=Path(work),
            log=log,
            warmup_every_run=not quick,
            soak_seconds=args.soak if args.soak is not None else (0.0 if quick else 45.0),
            nice=args.nice,
        )
        if not args.no_profile:
            plan.profile = profiler(stamp, max(3, round(seconds)), generator)
        upstream = start_upstream(Path(work), args.nice)
        stack.callback(upstream.stop)
        reports = run_targets(plan, targets, upstream)
        observability = observability_section(args, plan, upstream, postgres)
    http_seconds = time.monotonic() - started
    ledger: dict[str, Any] = {}
    if not args.no_ledger:
        stores = ["sqlite", "postgres"] if postgres else ["sqlite"]
        ledger = ledger_section(events, 1.0 if quick else 2.0, stores)
    text, records = report.table(reports)
    verdicts = (
        report.http_verdicts(reports)
        + report.lag_verdicts(reports)
        + report.memory_verdicts(reports)
        + report.ledger_verdicts(ledger)
        + (bench_observability.verdicts(observability) if observability else [])
    )
    log("")
    log(text)
    log("")
    log(f"Storage (one commit, ms): {description['storage']}")
    for line in report.ledger_lines(ledger):
        log(line)
    for line in bench_observability.lines(observability) if observability else []:
        log(line)
    log("")
    log("Targets (issue 8):")
    for verdict in verdicts:
        log("  " + verdict.line())
    output = args.output or RESULTS / f"{stamp}.json"
    document = {
        "stamp": stamp,
        "mode": "quick" if quick else "full",
        "seconds_per_run": seconds,
        "floor": report.FLOOR,
        "machine": description,
        "load_average_at_end": os.getloadavg(),
        "notes": notes,
        "http_seconds": round(http_seconds, 1),
        "total_seconds": round(time.monotonic() - started, 1),
        "table": text,
        "rows": records,
        "targets": [
            {
                "name": r.target.name,
                "requests_served": r.requests_served,
                "memory_marks": r.memory_marks,
                **r.extra,
            }
            for r in reports
        ],
        "verdicts": [v.line() for v in verdicts],
        "ledger": ledger,
        "observability": observability,
    }
    output.write_text(json.dumps(document, indent=1, default=str) + "\n")
    log(f"\nwritten: {output} ({document['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
