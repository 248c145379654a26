"""Settling after the answer vs before it, at c=1, in the same run: what the settlement's commit
costs a lone request (issue 18's c=1 target; README, "Settling after the answer").

Three servers side by side on the same fake upstream: the floor (bare-aiohttp) and two
lowrouter-pg gateways (one worker each, each on a fresh database), one with
LOWROUTER_SETTLE_AFTER_ANSWER=true (an opt-in) and one with `false` (every answer waits for its
settlement's commit, as in release 0.2). Each is driven at c=1, non-streaming then streaming, in
alternating rounds (floor, after, before; then the reverse, …) so a neighbour's burst on a shared
machine lands on all of them; medians of each one's rounds are compared. Alone:

    .venv/bin/python -m bench.settle_ack [--rounds 6] [--seconds 3]
"""

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from bench.loadgen import LoadResult, load_generator
from bench.matrix import (
    Plan,
    Target,
    load_for,
    running_bare,
    running_lowrouter,
    start_upstream,
)
from bench.processes import Server, process_cpu_seconds
from domain.policy import NO_POLICY, KeyPolicy
from domain.scope import Scope

GATEWAYS = {
    "after": {"LOWROUTER_SETTLE_AFTER_ANSWER": "true"},
    "before": {"LOWROUTER_SETTLE_AFTER_ANSWER": "false"},
}


def measure(plan: Plan, server: Server, load: Any) -> tuple[LoadResult, float | None]:
    workers = server.worker_pids()
    before = {pid: process_cpu_seconds(pid) for pid in workers}
    result = plan.generator.run(load, 1, plan.seconds)
    used = sum(process_cpu_seconds(pid) - before[pid] for pid in workers)
    server.requests_served += result.requests
    time.sleep(plan.pause)
    cpu = round(used * 1000 / result.requests, 3) if result.requests else None
    return result, cpu


def compare(plan: Plan, rounds: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    with ExitStack() as stack:
        upstream = start_upstream(plan.work_dir)
        stack.callback(upstream.stop)
        servers: dict[str, tuple[Server, str | None]] = {}
        floor = stack.enter_context(
            running_bare(Target("bare-aiohttp", "bare", "aiohttp"), upstream, plan.work_dir)
        )
        servers["floor"] = (floor, None)
        for name, env in GATEWAYS.items():
            target = Target(f"lowrouter-pg-{name}", "lowrouter", "aiohttp", "postgres")
            server, _runtime, tenant = stack.enter_context(
                running_lowrouter(target, upstream, plan.work_dir, extra_env=env)
            )
            servers[name] = (server, tenant.token)
        for stream in (False, True):
            mode = "stream" if stream else "json"
            loads = {n: load_for(s, token, stream=stream) for n, (s, token) in servers.items()}
            for name in servers:  # warm up
                plan.generator.run(loads[name], 1, plan.warmup)
            measured: dict[str, list[tuple[LoadResult, float | None]]] = {n: [] for n in servers}
            for number in range(rounds):
                order = list(servers) if number % 2 == 0 else list(reversed(servers))
                for name in order:
                    result, cpu = measure(plan, servers[name][0], loads[name])
                    measured[name].append((result, cpu))
                    plan.log(
                        f"  {mode:<6} {name:<6} round {number + 1}: p50 {result.p50_ms:6.2f} ms"
                        f"  p99 {result.p99_ms:7.2f} ms  {result.rps:6.0f} req/s"
                        f"  worker CPU {cpu} ms/req  errors {result.errors}"
                    )
            figures[mode] = summarise(measured)
    return figures


def summarise(measured: dict[str, list[tuple[LoadResult, float | None]]]) -> dict[str, Any]:
    def median(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return round(statistics.median(present), 3) if present else None

    out: dict[str, Any] = {}
    for name, runs in measured.items():
        out[name] = {
            "p50_ms": [round(r.p50_ms, 3) for r, _ in runs],
            "p99_ms": [round(r.p99_ms, 3) for r, _ in runs],
            "p50_ms_median": median([r.p50_ms for r, _ in runs]),
            "p99_ms_median": median([r.p99_ms for r, _ in runs]),
            "rps_median": median([r.rps for r, _ in runs]),
            "worker_cpu_ms_per_request_median": median([cpu for _, cpu in runs]),
            "errors": sum(r.errors for r, _ in runs),
        }
    floor = out["floor"]
    for name in GATEWAYS:
        for figure in ("p50_ms_median", "p99_ms_median"):
            if out[name][figure] is not None and floor[figure] is not None:
                out[name]["added_" + figure] = round(out[name][figure] - floor[figure], 3)
    return out


@dataclass(frozen=True)
class _Key:
    key_id: UUID
    account_id: UUID
    name: str = "bench-key"
    scope: Scope = field(default_factory=Scope)
    policy: KeyPolicy = NO_POLICY
    lineage_id: UUID | None = None


def finish_wait(calls: int, rounds: int) -> dict[str, Any]:
    """In one process on a fresh PostgreSQL database: how long `MeteredCall.finish` keeps a
    request waiting, settling after the answer vs before it (alternating rounds of `calls` lone
    calls each): exactly what the answer no longer waits for, without HTTP or the machine's
    other noise in between."""
    from application.metering import MeteredRequest, Metering, Outcome
    from bench.fixtures import create_tenant, open_bench_runtime, postgres_database
    from bench.fixtures import write_catalogue as bench_catalogue
    from domain.pricing import TokenCounts
    from infrastructure.catalogue import load_catalogue

    request = MeteredRequest("chat.completions", "bench/fast", 40, 16)
    waits: dict[str, list[float]] = {"after": [], "before": []}
    with tempfile.TemporaryDirectory() as work, postgres_database() as url:
        runtime = open_bench_runtime(url)
        try:
            tenant = create_tenant(runtime)
            key = _Key(tenant.key_id, tenant.account_id)
            catalogue = load_catalogue(bench_catalogue(Path(work) / "c.toml", "http://x/v1"), {})
            meterings = {
                "after": Metering(runtime.spend, catalogue, answer_first_within=60.0),
                "before": Metering(runtime.spend, catalogue),
            }

            async def one(metering: Metering, number: int) -> float:
                call = await metering.begin(key, f"r{number}", request, time.perf_counter())
                started = time.perf_counter()
                await call.finish(Outcome.ANSWERED, reported=TokenCounts(12, 3))
                return time.perf_counter() - started

            async def run() -> None:
                number = 0
                for _ in range(2):  # warm-up
                    await one(meterings["before"], number := number + 1)
                for round_number in range(rounds):
                    names = ["after", "before"] if round_number % 2 == 0 else ["before", "after"]
                    for name in names:
                        for _ in range(calls):
                            number += 1
                            waits[name].append(await one(meterings[name], number))
                            await asyncio.sleep(0.001)  # let a settlement left queued land

            asyncio.run(run())
        finally:
            runtime.close()

    def percentile(values: list[float], share: float) -> float:
        ordered = sorted(values)
        return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000, 3)

    return {
        name: {"calls": len(v), "p50_ms": percentile(v, 0.5), "p99_ms": percentile(v, 0.99)}
        for name, v in waits.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument(
        "--finish-only", action="store_true", help="only the in-process finish() wait"
    )
    args = parser.parse_args(argv)
    if args.finish_only:
        print(f"load average {os.getloadavg()}", flush=True)
        waits = finish_wait(200, args.rounds)
        print(json.dumps(waits), f"load average {os.getloadavg()}", flush=True)
        if args.output is not None:
            args.output.write_text(json.dumps(waits, indent=2))
        return 0
    started = os.getloadavg()
    print(f"settle after vs before the answer, c=1; load average {started}", flush=True)
    with tempfile.TemporaryDirectory(prefix="lowrouter-settle-") as work:
        plan = Plan(
            load_generator(0),
            args.seconds,
            warmup=1.0,
            work_dir=Path(work),
            log=lambda line: print(line, flush=True),
        )
        figures = compare(plan, args.rounds)
    figures["load_average"] = {"start": started, "end": os.getloadavg()}
    for mode in ("json", "stream"):
        for name, f in figures[mode].items():
            added = ""
            if "added_p50_ms_median" in f:
                added = f"  added p50 {f['added_p50_ms_median']:.2f} ms"
                added += f", p99 {f['added_p99_ms_median']:.2f} ms"
            print(
                f"{mode:<6} {name:<6} median p50 {f['p50_ms_median']:.2f} ms"
                f"  p99 {f['p99_ms_median']:.2f} ms  worker CPU"
                f" {f['worker_cpu_ms_per_request_median']} ms/req{added}"
            )
    print(f"load average: {figures['load_average']}")
    if args.output is not None:
        args.output.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
