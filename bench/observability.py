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
from contextlib import ExitStack
from typing import Any

import httpx

from bench.matrix import Plan, Row, Target, load_for, measure, running_lowrouter
from bench.processes import Server
from bench.report import Verdict

CONCURRENCY = 64
ROUNDS = 3
BUDGET = 0.97  # "on" keeps at least 97 % of "off"'s requests per second
PROFILES = {
    "observability-on": {"LOWROUTER_LOG_FORMAT": "json"},
    "observability-off": {"LOWROUTER_METRICS": "false", "LOWROUTER_ACCESS_LOG": "false"},
}


def observability_cost(plan: Plan, upstream: Server) -> dict[str, Any]:
    plan.log("observability on vs off: two lowrouter-pg gateways, c=64 json, alternating rounds")
    rows: dict[str, list[Row]] = {name: [] for name in PROFILES}
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
                row = measure(plan, server, load, CONCURRENCY, warm_up=False)
                rows[name].append(row)
                plan.log(
                    f"  {name:<18} round {round_number + 1}: {row.result.rps:8.0f} req/s"
                    f"  CPU {row.cpu_ms_per_request} ms/req  errors {row.result.errors}"
                )
        on_server, _ = servers["observability-on"]
        counted = requests_counted(on_server)
        served = on_server.requests_served
    return summarise(rows, counted, served)


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


def summarise(rows: dict[str, list[Row]], counted: float | None, served: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for name, measured in rows.items():
        cpu = [row.cpu_ms_per_request for row in measured if row.cpu_ms_per_request]
        figures[name] = {
            "rps": [round(row.result.rps, 1) for row in measured],
            "rps_median": round(statistics.median(row.result.rps for row in measured), 1),
            "p50_ms_median": round(statistics.median(row.result.p50_ms for row in measured), 2),
            "p99_ms_median": round(statistics.median(row.result.p99_ms for row in measured), 2),
            "cpu_ms_per_request_median": round(statistics.median(cpu), 3) if cpu else None,
            "errors": sum(row.result.errors for row in measured),
            "machine_busy_percent": [row.machine_busy_percent for row in measured],
        }
    on, off = figures["observability-on"], figures["observability-off"]
    figures["throughput_ratio"] = round(on["rps_median"] / off["rps_median"], 4)
    if on["cpu_ms_per_request_median"] and off["cpu_ms_per_request_median"]:
        figures["cpu_per_request_added_ms"] = round(
            on["cpu_ms_per_request_median"] - off["cpu_ms_per_request_median"], 3
        )
    figures["on_requests_counted_by_metrics"] = counted
    figures["on_requests_sent"] = served
    return figures


def verdicts(figures: dict[str, Any]) -> list[Verdict]:
    label = "metrics + JSON request log on vs off, PG json c=64 req/s"
    ratio = figures.get("throughput_ratio")
    if ratio is None:
        return [Verdict(label, figures.get("error", "not measured"), None)]
    added = figures.get("cpu_per_request_added_ms")
    cpu = f"; CPU {added:+.3f} ms/request" if added is not None else ""
    return [Verdict(label, f"{ratio:.1%} (target >= {BUDGET:.0%}){cpu}", ratio >= BUDGET)]


def lines(figures: dict[str, Any]) -> list[str]:
    if "error" in figures:
        return [f"Observability on vs off: {figures['error']}"]
    out = ["Observability on vs off (c=64 json, medians of alternating rounds):"]
    for name in PROFILES:
        f = figures[name]
        out.append(
            f"  {name:<18} {f['rps_median']:8.0f} req/s  p50 {f['p50_ms_median']:.2f} ms"
            f"  p99 {f['p99_ms_median']:.2f} ms  CPU {f['cpu_ms_per_request_median']} ms/req"
            f"  rounds {f['rps']}"
        )
    out.append(
        f"  the 'on' gateway's /metrics counted {figures['on_requests_counted_by_metrics']:.0f}"
        f" requests; the load generator saw {figures['on_requests_sent']} answered (each run"
        " ends with up to 64 still in flight, which the gateway answers too)"
    )
    return out
