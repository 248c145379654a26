"""`python -m bench.run` (`make bench`): lowrouter beside a bare pass-through proxy and real
peers, on loopback.

Profiles (`--profiles`, default all): `matrix` starts a fast fake upstream, the bare proxy (three
upstream clients) and lowrouter on SQLite and PostgreSQL (one worker, and two), drives each with
wrk at concurrency 1, 16, 64 and 256, non-streaming and streaming, samples the usage-history lag
at c=64 and profiles one worker with py-spy; `peers` adds LiteLLM and Portkey's gateway to the
same table; `many-account` measures 1,000 keys over 100 accounts on one worker and two; `llm`
the LLM-shaped load (1,000 slow streams on one worker); `ledger` the in-process ledger and
projection figures; `observability` metrics and logging on vs off. Prints one table and the
targets of issue 18 with PASS/FAIL; writes everything to bench/results/<timestamp>.json.
See bench/README.md.
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


PROFILES = ("matrix", "peers", "many-account", "llm", "ledger", "observability")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="short runs, a smaller LLM load")
    parser.add_argument(
        "--profiles",
        default=",".join(PROFILES),
        help=f"comma-separated, from {', '.join(PROFILES)} (default: all)",
    )
    parser.add_argument("--llm-streams", type=int, help="LLM-shaped streams (1000; quick 200)")
    parser.add_argument(
        "--llm-seconds", type=float, help="LLM-shaped stream length (10 s; quick 4)"
    )
    parser.add_argument("--duration", type=float, help="seconds per measured run")
    parser.add_argument("--events", type=int, help="ledger events for catch-up/rebuild/replay")
    parser.add_argument(
        "--only", help="comma-separated target names (default: all; see bench/README.md)"
    )
    parser.add_argument("--no-ledger", action="store_true", help="same as leaving out `ledger`")
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


PEERS = ("litellm", "portkey")


def peer_targets(notes: list[str]) -> list[Any]:
    """The peers that could be installed (bench/peers.py); a note for each one that could not."""
    from bench.matrix import Target
    from bench.peers import install

    targets = []
    for name, problem in install(list(PEERS)).items():
        if problem:
            notes.append(f"peer {name} skipped: {problem}")
            log(notes[-1])
        else:
            targets.append(Target(name, "peer", "aiohttp", concurrencies=(1, 64)))
    return targets


def all_targets() -> list[Any]:
    from bench.matrix import Target

    return [
        Target("bare-httpx", "bare", "httpx"),
        Target("bare-httpx-aiohttp", "bare", "httpx-aiohttp"),
        Target("bare-aiohttp", "bare", "aiohttp"),
        # Does the floor itself scale to two workers on this machine? (c=64 only)
        Target("bare-aiohttp-w2", "bare", "aiohttp", workers=2, concurrencies=(64,)),
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


def guarded(name: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One profile's figures; a failure is reported and the other profiles still count."""
    try:
        return run()
    except Exception as error:
        log(f"{name}: FAILED: {type(error).__name__}: {error}")
        return {"error": f"{type(error).__name__}: {error}"}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    notes = ensure_packages()
    from bench import observability as bench_observability
    from bench import report
    from bench.fixtures import admin_conninfo, postgres_available
    from bench.llm import lines as llm_lines
    from bench.llm import llm_profile
    from bench.llm import verdicts as llm_verdicts
    from bench.loadgen import load_generator
    from bench.many_accounts import many_account_profile
    from bench.many_accounts import verdicts as many_verdicts
    from bench.matrix import Plan, run_targets, start_upstream
    from bench.probes import storage_probes

    quick = args.quick
    profiles = {name.strip() for name in args.profiles.split(",") if name.strip()}
    unknown = profiles - set(PROFILES)
    if unknown:
        log(f"unknown profiles: {', '.join(sorted(unknown))} (choose from {', '.join(PROFILES)})")
        return 2
    if args.no_ledger:
        profiles.discard("ledger")
    if args.no_observability:
        profiles.discard("observability")
    seconds = args.duration or (2.0 if quick else 5.0)
    events = args.events or (20_000 if quick else 100_000)
    llm_streams = args.llm_streams or (200 if quick else 1000)
    llm_seconds = args.llm_seconds or (4.0 if quick else 10.0)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
        notes.append(f"niceness {args.nice} for the benchmark and every process it started")
    generator = load_generator(args.nice)
    notes.append(f"load generator: {generator.name}")
    postgres = postgres_available()
    targets = select_targets(args.only, postgres, args.baseline) if "matrix" in profiles else []
    if "peers" in profiles:
        targets += peer_targets(notes)
    description = report.machine()
    description["storage"] = storage_probes(admin_conninfo() if postgres else None)
    log(
        f"lowrouter bench ({'quick' if quick else 'full'}; {', '.join(sorted(profiles))}): "
        f"{seconds:g} s per run; {generator.name}; "
        f"load average {description['load_average_at_start']}"
    )
    started = time.monotonic()
    many: dict[str, Any] = {}
    llm: dict[str, Any] = {}
    observability: dict[str, Any] = {}
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
        if "many-account" in profiles and postgres:
            many = guarded("many-account", lambda: many_account_profile(plan, upstream))
        if "llm" in profiles and postgres:
            spied = None if args.no_profile else RESULTS / f"profile-{stamp}-llm.txt"
            llm = guarded("llm", lambda: llm_profile(plan, llm_streams, llm_seconds, spied))
        if "observability" in profiles:
            observability = observability_section(args, plan, upstream, postgres)
    http_seconds = time.monotonic() - started
    app: dict[str, Any] = {}
    if "ledger" in profiles:
        stores = ["sqlite", "postgres"] if postgres else ["sqlite"]
        app = ledger_section(events, 1.0 if quick else 2.0, stores)
    text, records = report.table(reports)
    verdicts = (
        report.http_verdicts(reports)
        + report.lag_verdicts(reports)
        + report.memory_verdicts(reports)
        + report.ledger_verdicts(app)
        + (many_verdicts(many) if many else [])
        + (llm_verdicts(llm) if llm else [])
        + (bench_observability.verdicts(observability) if observability else [])
    )
    log("")
    log(text)
    for r in reports:
        for mode, problem in r.extra.get("skipped", {}).items():
            log(f"{r.target.name} {mode}: not measured, one request got {problem}")
        if "failed" in r.extra:
            log(f"{r.target.name}: not measured: {r.extra['failed']}")
    for note in notes:
        if note.startswith("peer "):
            log(note)
    log("")
    log(f"Storage (one commit, ms): {description['storage']}")
    for line in report.ledger_lines(app):
        log(line)
    for line in bench_observability.lines(observability) if observability else []:
        log(line)
    for line in llm_lines(llm) if "floor" in llm else []:
        log(line)
    log("")
    log(f"Targets (issue 18; load average now {os.getloadavg()[0]:.1f}):")
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
        "ledger": app,
        "many_account": many,
        "llm": llm,
        "observability": observability,
    }
    output.write_text(json.dumps(document, indent=1, default=str) + "\n")
    log(f"\nwritten: {output} ({document['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
