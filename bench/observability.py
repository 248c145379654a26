"""Metrics and logging on vs off, in the same run: what observability costs on the hot path.

Two lowrouter-pg gateways (one worker each) side by side: "on" as an operator runs it in
production (metrics recorded, a JSON request line per request, written to the server's log
file), "off" with both switched off (LOWROUTER_METRICS=false, LOWROUTER_ACCESS_LOG=false; the
overhead header stays, the contract wants it on every answer). Both are driven at c=64,
non-streaming, in alternating rounds (on, off, off, on, …) so a neighbour's burst on the shared
machine lands on both; the medians are compared. The budget (issue 16): at most 3 % of
throughput.
"""

import statistics
import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx

from bench.loadgen import LoadResult
from bench.matrix import Plan, Target, load_for, running_lowrouter
from bench.processes import (
    Server,
    busy_percent,
    machine_cpu_times,
    process_cpu_seconds,
)
from bench.report import Verdict

CONCURRENCY = 64
ROUNDS = 4  # alternating, so a neighbour's burst on a shared machine lands on both
BUDGET = 0.97  # "on" keeps at least 97 % of "off"'s requests per second
PROFILES = {
    "observability-on": {"LOWROUTER_LOG_FORMAT": "json"},
    "observability-off": {"LOWROUTER_METRICS": "false", "LOWROUTER_ACCESS_LOG": "false"},
}


@dataclass
class Round:
    """One measured run of one gateway."""

    result: LoadResult
    worker_cpu_ms_per_request: float | None  # the worker alone: where the hot path runs
    server_cpu_ms_per_request: float | None  # with the background process (projections)
    machine_busy_percent: float | None


def observability_cost(plan: Plan, upstream: Server) -> dict[str, Any]:
    plan.log("observability on vs off: two lowrouter-pg gateways, c=64 json, alternating rounds")
    rounds: dict[str, list[Round]] = {name: [] for name in PROFILES}
    with ExitStack() as stack:
        servers: dict[str, tuple[Server, Any]] = {}
        for name, env in PROFILES.items():
            target = Target(name, "lowrouter", "httpx-aiohttp", "postgres")
            server, _runtime, tenant = stack.enter_context(
                running_lowrouter(target, upstream, plan.work_dir, plan.nice, extra_env=env)
            )
            servers[name] = (server, load_for(server, tenant.token, stream=False))
        for server, load in servers.values():  # warm both up before anything is measured
            server.requests_served += plan.generator.run(load, CONCURRENCY, plan.warmup).requests
        for round_number in range(ROUNDS):
            order = list(PROFILES) if round_number % 2 == 0 else list(reversed(PROFILES))
            for name in order:
                server, load = servers[name]
                measured = measure_round(plan, server, load)
                rounds[name].append(measured)
                plan.log(
                    f"  {name:<18} round {round_number + 1}: {measured.result.rps:8.0f} req/s"
                    f"  worker CPU {measured.worker_cpu_ms_per_request} ms/req"
                    f"  box {measured.machine_busy_percent}%  errors {measured.result.errors}"
                )
        on_server, _ = servers["observability-on"]
        counted = requests_counted(on_server)
        served = on_server.requests_served
    return summarise(rounds, counted, served)


def measure_round(plan: Plan, server: Server, load: Any) -> Round:
    workers, everything = server.worker_pids(), server.all_pids()
    before = {pid: process_cpu_seconds(pid) for pid in everything}
    machine_before = machine_cpu_times()
    result = plan.generator.run(load, CONCURRENCY, plan.seconds)
    used = {pid: process_cpu_seconds(pid) - before[pid] for pid in everything}
    busy = busy_percent(machine_before, machine_cpu_times())
    server.requests_served += result.requests
    time.sleep(plan.pause)  # let the requests the run left in flight finish

    def per_request(seconds: float) -> float | None:
        return round(seconds * 1000 / result.requests, 3) if result.requests else None

    return Round(
        result,
        per_request(sum(used[pid] for pid in workers)),
        per_request(sum(used.values())),
        busy,
    )


def requests_counted(server: Server) -> float | None:
    """What the "on" gateway's /metrics counted, to show the metrics were really recorded."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = httpx.get(server.url + "/metrics", timeout=10).text
    except httpx.HTTPError:
        return None
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "lowrouter_requests_total" and sample.labels["api"] == "chat.completions"
    )


def summarise(rounds: dict[str, list[Round]], counted: float | None, served: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}

    def median(values: list[float | None], places: int) -> float | None:
        present = [v for v in values if v is not None]
        return round(statistics.median(present), places) if present else None

    for name, measured in rounds.items():
        figures[name] = {
            "rps": [round(r.result.rps, 1) for r in measured],
            "rps_median": median([r.result.rps for r in measured], 1),
            "p50_ms_median": median([r.result.p50_ms for r in measured], 2),
            "p99_ms_median": median([r.result.p99_ms for r in measured], 2),
            "worker_cpu_ms_per_request": [r.worker_cpu_ms_per_request for r in measured],
            "worker_cpu_ms_per_request_median": median(
                [r.worker_cpu_ms_per_request for r in measured], 3
            ),
            "server_cpu_ms_per_request_median": median(
                [r.server_cpu_ms_per_request for r in measured], 3
            ),
            "errors": sum(r.result.errors for r in measured),
            "machine_busy_percent": [r.machine_busy_percent for r in measured],
        }
    on, off = figures["observability-on"], figures["observability-off"]
    if on["rps_median"] and off["rps_median"]:
        figures["throughput_ratio"] = round(on["rps_median"] / off["rps_median"], 4)
    on_cpu = on["worker_cpu_ms_per_request_median"]
    off_cpu = off["worker_cpu_ms_per_request_median"]
    if on_cpu and off_cpu:
        figures["worker_cpu_added_ms_per_request"] = round(on_cpu - off_cpu, 3)
        figures["worker_cpu_ratio"] = round(on_cpu / off_cpu, 4)
    figures["on_requests_counted_by_metrics"] = counted
    figures["on_requests_answered_in_runs"] = served
    return figures


def verdicts(figures: dict[str, Any]) -> list[Verdict]:
    label = "metrics + JSON request log on vs off, PG json c=64 req/s"
    ratio = figures.get("throughput_ratio")
    if ratio is None:
        return [Verdict(label, figures.get("error", "not measured"), None)]
    added = figures.get("worker_cpu_added_ms_per_request")
    cpu_ratio = figures.get("worker_cpu_ratio")
    cpu = (
        f"; worker CPU {added:+.3f} ms/request ({cpu_ratio - 1:+.1%})"
        if added is not None and cpu_ratio is not None
        else ""
    )
    return [Verdict(label, f"{ratio:.1%} (target >= {BUDGET:.0%}){cpu}", ratio >= BUDGET)]


def lines(figures: dict[str, Any]) -> list[str]:
    if "error" in figures:
        return [f"Observability on vs off: {figures['error']}"]
    out = ["Observability on vs off (c=64 json, medians of alternating rounds):"]
    for name in PROFILES:
        f = figures[name]
        out.append(
            f"  {name:<18} {f['rps_median']:8.0f} req/s  p50 {f['p50_ms_median']:.2f} ms"
            f"  p99 {f['p99_ms_median']:.2f} ms  worker CPU"
            f" {f['worker_cpu_ms_per_request_median']} ms/req  rounds {f['rps']} req/s,"
            f" {f['worker_cpu_ms_per_request']} ms/req, box% {f['machine_busy_percent']}"
        )
    out.append(
        f"  the 'on' gateway's /metrics counted {figures['on_requests_counted_by_metrics']:.0f}"
        f" requests; the load generator saw {figures['on_requests_answered_in_runs']} answered"
        " (each run ends with up to 64 still in flight, which the gateway answers too)"
    )
    return out
