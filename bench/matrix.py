"""The HTTP side: targets (bare proxies and lowrouter), each started on its own port and driven at
each concurrency, non-streaming and streaming; one row per (target, mode, concurrency)."""

import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.fixtures import (
    MODEL,
    Tenant,
    create_tenant,
    gateway_environ,
    open_bench_runtime,
    postgres_database,
    sqlite_database,
    write_catalogue,
)
from bench.lag import LagSampler, wait_caught_up
from bench.loadgen import Load, LoadResult, PythonLoad, Wrk
from bench.processes import (
    Server,
    busy_percent,
    free_port,
    machine_cpu_times,
    serve_command,
    start_server,
    uvicorn_command,
)
from infrastructure.runtime import Runtime

MODES = ("json", "stream")
LAG_CONCURRENCY = 64
PROMPT = [{"role": "user", "content": "Hello"}]


def request_body(stream: bool) -> bytes:
    body: dict[str, Any] = {"model": MODEL, "messages": PROMPT, "max_tokens": 16}
    if stream:
        body["stream"] = True
    return orjson.dumps(body)


@dataclass(frozen=True)
class Target:
    name: str
    kind: str  # "bare" | "lowrouter" | "peer"
    transport: str  # the upstream client: "httpx" | "httpx-aiohttp" | "aiohttp"
    store: str | None = None  # "sqlite" | "postgres"
    workers: int = 1
    concurrencies: tuple[int, ...] = (1, 16, 64, 256)
    source: Path | None = None  # another checkout's code (`--baseline`), not this one's


@dataclass
class Row:
    target: str
    mode: str
    concurrency: int
    result: LoadResult
    cpu_percent: float
    cpu_ms_per_request: float | None
    rss_mb: float
    worker_rss_mb: list[float]
    lag: dict[str, Any] | None = None
    machine_busy_percent: float | None = None  # all cores, every process: is the box saturated?

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "mode": self.mode,
            "concurrency": self.concurrency,
            **self.result.as_dict(),
            "cpu_percent": self.cpu_percent,
            "cpu_ms_per_request": self.cpu_ms_per_request,
            "rss_mb": self.rss_mb,
            "worker_rss_mb": self.worker_rss_mb,
            "machine_busy_percent": self.machine_busy_percent,
            "lag": self.lag,
        }


@dataclass
class TargetReport:
    target: Target
    rows: list[Row] = field(default_factory=list)
    memory_marks: list[dict[str, Any]] = field(default_factory=list)
    requests_served: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    generator: Wrk | PythonLoad
    seconds: float
    warmup: float
    work_dir: Path
    log: Callable[[str], None]
    warmup_every_run: bool = True  # else once per target and mode
    pause: float = 0.3  # after a warm-up, so requests it left in flight are done
    profile: Callable[[Server, Load], dict[str, Any]] | None = None
    profile_targets: tuple[str, ...] = ("lowrouter-pg",)
    soak_target: str = "lowrouter-pg"
    soak_seconds: float = 0.0  # extra c=64 load on the profile target, for the memory marks
    nice: int = 0  # scheduling priority of every process the benchmark starts


# Starting targets ---------------------------------------------------------------------------


def start_upstream(work_dir: Path, nice: int = 0) -> Server:
    port = free_port()
    command = uvicorn_command("bench.upstream:app", port)
    return start_server("upstream", command, port, os.environ, work_dir, nice=nice)


@contextmanager
def running_bare(
    target: Target, upstream: Server, work_dir: Path, nice: int = 0
) -> Iterator[Server]:
    port = free_port()
    env = {
        **os.environ,
        "BENCH_UPSTREAM_URL": upstream.url + "/v1",
        "BENCH_TRANSPORT": target.transport,
    }
    command = uvicorn_command(
        "bench.bare_proxy:create_app", port, factory=True, workers=target.workers
    )
    server = start_server(
        target.name, command, port, env, work_dir, workers=target.workers, nice=nice
    )
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def running_lowrouter(
    target: Target,
    upstream: Server,
    work_dir: Path,
    nice: int = 0,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[tuple[Server, Runtime, Tenant]]:
    """A fresh database with the schema and a tenant, then the gateway on it; the setup runtime
    stays open beside it to watch the projections."""
    with ExitStack() as stack:
        if target.store == "postgres":
            url = stack.enter_context(postgres_database())
        else:
            url = stack.enter_context(sqlite_database(work_dir))
        runtime = open_bench_runtime(url)  # creates the schema, as `lowrouter serve` does first
        stack.callback(runtime.close)
        tenant = create_tenant(runtime)
        catalogue = write_catalogue(work_dir / f"{target.name}.toml", upstream.url + "/v1")
        port = free_port()
        command = serve_command(port, target.workers)
        env = {**gateway_environ(url, catalogue), **(extra_env or {})}
        server = start_server(
            target.name,
            command,
            port,
            env,
            work_dir,
            workers=target.workers,
            nice=nice,
            source=target.source,
        )
        stack.callback(server.stop)
        yield server, runtime, tenant


# Driving ------------------------------------------------------------------------------------


def load_for(
    server: Server,
    token: str | None,
    stream: bool,
    path: str = "/api/v1/chat/completions",
    headers: Mapping[str, str] | None = None,
) -> Load:
    sent = dict(headers or {"content-type": "application/json"})
    if token:
        sent["authorization"] = f"Bearer {token}"
    return Load(server.url + path, request_body(stream), sent)


def measure(
    plan: Plan,
    server: Server,
    load: Load,
    concurrency: int,
    runtime: Runtime | None = None,
    warm_up: bool = True,
) -> Row:
    """Warm up at this concurrency, then one measured run with CPU and memory around it."""
    if warm_up:
        server.requests_served += plan.generator.run(load, concurrency, plan.warmup).requests
        time.sleep(plan.pause)
    cpu_before, started = server.cpu_seconds(), time.monotonic()
    machine_before = machine_cpu_times()
    lag: dict[str, Any] | None = None
    if runtime is not None and concurrency == LAG_CONCURRENCY:
        with LagSampler(runtime) as samples:
            result = plan.generator.run(load, concurrency, plan.seconds)
        lag = samples.summary()
        lag["catch_up_after_run_s"] = round(wait_caught_up(runtime), 3)
    else:
        result = plan.generator.run(load, concurrency, plan.seconds)
    elapsed = time.monotonic() - started
    cpu_seconds = server.cpu_seconds() - cpu_before
    machine_busy = busy_percent(machine_before, machine_cpu_times())
    cpu = cpu_seconds / elapsed * 100 if elapsed else 0.0
    per_request = round(cpu_seconds * 1000 / result.requests, 2) if result.requests else None
    server.requests_served += result.requests
    server.mark_memory()
    mode = "stream" if b'"stream":true' in load.body else "json"
    return Row(
        server.name,
        mode,
        concurrency,
        result,
        round(cpu, 1),
        per_request,
        server.total_rss_mb(),
        server.worker_rss_mb(),
        lag,
        machine_busy,
    )


def probe(load: Load) -> str | None:
    """One request: None if it answered 2xx, else what went wrong."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(load.url, data=load.body, headers=load.headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
            return None
    except urllib.error.HTTPError as error:
        return f"{error.code} {error.read()[:120]!r}"
    except OSError as error:
        return f"{type(error).__name__}: {error}"


def drive(
    plan: Plan,
    target: Target,
    server: Server,
    token: str | None,
    runtime: Runtime | None = None,
    path: str = "/api/v1/chat/completions",
    headers: Mapping[str, str] | None = None,
) -> TargetReport:
    report = TargetReport(target)
    for mode in MODES:
        load = load_for(server, token, mode == "stream", path, headers)
        problem = probe(load)
        if problem:  # e.g. a peer that cannot stream here: its rows would only be errors
            plan.log(f"  {target.name} {mode}: skipped, one request got {problem}")
            report.extra.setdefault("skipped", {})[mode] = problem
            continue
        for i, concurrency in enumerate(target.concurrencies):
            warm_up = plan.warmup > 0 and (plan.warmup_every_run or i == 0)
            row = measure(plan, server, load, concurrency, runtime, warm_up)
            plan.log(
                f"  {target.name:<22} {mode:<6} c={concurrency:<4} {row.result.rps:8.0f} req/s"
                f"  p50 {row.result.p50_ms:7.2f} ms  p99 {row.result.p99_ms:7.2f} ms"
                f"  errors {row.result.errors}"
            )
            report.rows.append(row)
    report.memory_marks = list(server.memory_marks)
    report.requests_served = server.requests_served
    return report


def run_target(plan: Plan, target: Target, upstream: Server) -> TargetReport:
    plan.log(f"{target.name}: starting (load average {os.getloadavg()[0]:.1f})")
    load_average = os.getloadavg()[0]
    if target.kind == "bare":
        with running_bare(target, upstream, plan.work_dir, plan.nice) as server:
            report = drive(plan, target, server, None)
    elif target.kind == "peer":
        from bench.peers import peer_headers, peer_path, running_peer

        with running_peer(target.name, upstream, plan.work_dir, plan.nice) as server:
            headers = {"content-type": "application/json", **peer_headers(target.name, upstream)}
            report = drive(plan, target, server, None, path=peer_path(target.name), headers=headers)
    else:
        with running_lowrouter(target, upstream, plan.work_dir, plan.nice) as (
            server,
            runtime,
            tenant,
        ):
            report = drive(plan, target, server, tenant.token, runtime)
            load = load_for(server, tenant.token, False)
            if plan.profile is not None and target.name in plan.profile_targets:
                report.extra["profile"] = plan.profile(server, load)
            if target.name == plan.soak_target:
                soak(plan, server, load, report)
    report.extra["load_average"] = [load_average, os.getloadavg()[0]]
    report.extra["log_problems"] = log_problems(server.log_path)
    return report


SOAK_STEP = 15.0


def soak(plan: Plan, server: Server, load: Load, report: TargetReport) -> None:
    """More requests at c=64, with a memory mark every SOAK_STEP seconds: is RSS flat?"""
    remaining = plan.soak_seconds
    while remaining > 0:
        step = min(SOAK_STEP, remaining)
        server.requests_served += plan.generator.run(load, 64, step).requests
        server.mark_memory()
        remaining -= step
    report.memory_marks = list(server.memory_marks)
    report.requests_served = server.requests_served
    if plan.soak_seconds:
        plan.log(f"  soak: {server.requests_served} requests served, {server.memory_marks[-1]}")


PROBLEM = re.compile(r"^([\w.]+(Error|Exception|Disconnect)\b.*|.*\b(failed|CRITICAL)\b.*)$")


ADDRESS = re.compile(r" at 0x[0-9a-f]+")


def log_problems(path: Path, top: int = 8) -> dict[str, int]:
    """What the server logged as going wrong: exception lines and failures, counted."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    found = Counter(ADDRESS.sub("", line)[:160] for line in lines if PROBLEM.match(line))
    return dict(found.most_common(top))


def run_targets(plan: Plan, targets: Sequence[Target], upstream: Server) -> list[TargetReport]:
    reports = []
    for target in targets:
        try:
            reports.append(run_target(plan, target, upstream))
        except Exception as error:  # one broken target must not lose the others' figures
            plan.log(f"{target.name}: FAILED: {type(error).__name__}: {error}")
            reports.append(TargetReport(target, extra={"failed": f"{error}"}))
    return reports
