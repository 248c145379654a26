"""The LLM-shaped load (issue 18): N concurrent streams (1,000 in the full run) on one worker, each
answered by bench/llm_upstream.py (first token after 200 ms, then 50 chunks a second for 10 s),
through the floor (the bare aiohttp proxy) and through lowrouter on PostgreSQL, one after the
other against the same upstream.

Measured per gateway: streams completed (`[DONE]` seen) and, for lowrouter, charged (its final
usage event carries a cost, and the usage projection holds one `ok` row per stream with a cost);
each chunk's transit delay (received − written by the upstream: the same monotonic clock), p50
and p99; the server's CPU per relayed chunk; the worker's peak RSS. lowrouter's added delay is its
p99 minus the floor's; its CPU per chunk is compared with the floor's.
"""

import asyncio
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.fixtures import MODEL
from bench.matrix import Plan, Target, running_bare, running_lowrouter
from bench.processes import (
    Server,
    free_port,
    process_cpu_seconds,
    start_server,
    uvicorn_command,
)

STAMP = re.compile(rb"t(\d+\.\d{6}) ")
EVENT_END = b"\n\n"


@dataclass
class StreamFigures:
    streams: int
    completed: int = 0
    charged: int = 0
    failed: int = 0
    chunks: int = 0
    delays: list[float] = field(default_factory=list)
    first_chunk_s: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        def pct(values: list[float], q: float) -> float | None:
            if not values:
                return None
            ordered = sorted(values)
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

        return {
            "streams": self.streams,
            "completed": self.completed,
            "charged": self.charged,
            "failed": self.failed,
            "chunks": self.chunks,
            "delay_p50_ms": pct(self.delays, 0.50),
            "delay_p99_ms": pct(self.delays, 0.99),
            "delay_max_ms": pct(self.delays, 1.0),
            "first_chunk_p50_ms": pct(self.first_chunk_s, 0.5),
        }


async def one_stream(
    session: Any, url: str, body: bytes, headers: dict[str, str], figures: StreamFigures
) -> None:
    started = time.monotonic()
    try:
        async with session.post(url, data=body, headers=headers) as response:
            if response.status != 200:
                figures.failed += 1
                return
            pending, tail, first = b"", b"", True
            async for data in response.content.iter_any():
                now = time.monotonic()
                if first:
                    figures.first_chunk_s.append(now - started)
                    first = False
                # Only whole events: a stamp split across two reads is read once, whole.
                whole, _, pending = (pending + data).rpartition(EVENT_END)
                for match in STAMP.finditer(whole):
                    figures.delays.append(now - float(match.group(1)))
                    figures.chunks += 1
                tail = (tail + whole)[-1024:]  # the last events: the usage, `[DONE]`
            if b"[DONE]" in tail + pending:
                figures.completed += 1
            if b'"cost":' in tail:
                figures.charged += 1
    except Exception:
        figures.failed += 1


async def drive_streams(url: str, headers: dict[str, str], streams: int) -> StreamFigures:
    import aiohttp

    body = orjson.dumps(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Tell me a long story"}],
            "max_tokens": 2000,
            "stream": True,
        }
    )
    figures = StreamFigures(streams)
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(
            *(one_stream(session, url, body, headers, figures) for _ in range(streams))
        )
    return figures


class RssSampler(threading.Thread):
    """The server's largest worker RSS, sampled every half second."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.server, self.peak = server, 0.0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.5):
            self.peak = max([self.peak, *self.server.worker_rss_mb()])

    def __enter__(self) -> "RssSampler":
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self.join()


def measure(
    server: Server,
    headers: dict[str, str],
    streams: int,
    profile: Path | None = None,
    seconds: float = 0,
) -> dict[str, Any]:
    """Drive the streams; with `profile`, py-spy records the worker meanwhile (collapsed)."""
    import uvloop

    recorder = None
    if profile is not None:
        from bench.profile import start_recording

        recorder = start_recording(server.worker_pids()[0], max(2, round(seconds)), profile)
    workers = server.worker_pids()
    worker_before = sum(process_cpu_seconds(pid) for pid in workers)
    cpu_before, started = server.cpu_seconds(), time.monotonic()
    with RssSampler(server) as rss:
        figures = uvloop.run(
            drive_streams(server.url + "/api/v1/chat/completions", headers, streams)
        )
    cpu = server.cpu_seconds() - cpu_before
    worker_cpu = sum(process_cpu_seconds(pid) for pid in workers) - worker_before
    if recorder is not None:
        recorder.wait(timeout=60)
    result = figures.summary()
    result["seconds"] = round(time.monotonic() - started, 1)
    result["cpu_s"] = round(cpu, 2)
    result["cpu_us_per_chunk"] = round(cpu / figures.chunks * 1e6, 1) if figures.chunks else None
    # The worker alone (lowrouter's background process, which runs whatever the load, left out)
    chunks = figures.chunks or 1
    result["worker_cpu_us_per_chunk"] = round(worker_cpu / chunks * 1e6, 1)
    result["peak_worker_rss_mb"] = round(rss.peak, 1)
    return result


def charged_rows(runtime: Any, account_id: Any) -> tuple[int, int]:
    """(usage rows with status ok and a cost, all usage rows) of the account, caught up."""
    from sqlalchemy import func, select

    from projections.schema import usage

    deadline = time.monotonic() + 30
    while True:
        runtime.projections.catch_up(["usage"])
        with runtime.engine.connect() as conn:
            rows = conn.execute(
                select(usage.c.status, func.count(), func.min(usage.c.cost))
                .where(usage.c.account_id == str(account_id))
                .group_by(usage.c.status)
            ).all()
        counts = {status: (n, least) for status, n, least in rows}
        ok, least = counts.get("ok", (0, 0))
        total = sum(n for n, _ in counts.values())
        if time.monotonic() > deadline or total > 0:
            return (ok if (least or 0) > 0 else 0), total


def llm_profile(
    plan: Plan, streams: int, seconds: float, profile: Path | None = None
) -> dict[str, Any]:
    env = {
        "BENCH_LLM_SECONDS": str(seconds),
        "BENCH_LLM_FIRST_TOKEN_S": "0.2",
        "BENCH_LLM_CHUNKS_PER_S": "50",
    }
    port = free_port()
    upstream = start_server(
        "llm-upstream",
        uvicorn_command("bench.llm_upstream:app", port),
        port,
        {**os.environ, **env},
        plan.work_dir,
        nice=plan.nice,
    )
    plan.log(
        f"LLM-shaped load: {streams} streams, first token 0.2 s, 50 chunks/s for {seconds:g} s "
        f"(load average {os.getloadavg()[0]:.1f})"
    )
    out: dict[str, Any] = {"streams": streams, "stream_seconds": seconds, "load_average": []}
    try:
        out["load_average"].append(os.getloadavg()[0])
        floor = Target("bare-aiohttp-llm", "bare", "aiohttp")
        with running_bare(floor, upstream, plan.work_dir, plan.nice) as s:
            out["floor"] = measure(s, {"content-type": "application/json"}, streams)
        plan.log(f"  floor: {out['floor']}")
        out["load_average"].append(os.getloadavg()[0])
        target = Target("lowrouter-pg-llm", "lowrouter", "aiohttp", "postgres")
        with running_lowrouter(target, upstream, plan.work_dir, plan.nice) as (s, rt, tenant):
            headers = {
                "content-type": "application/json",
                "authorization": f"Bearer {tenant.token}",
            }
            out["lowrouter"] = measure(s, headers, streams, profile, seconds)
            ok, rows = charged_rows(rt, tenant.account_id)
            out["lowrouter"]["usage_rows_ok_with_cost"] = ok
            out["lowrouter"]["usage_rows"] = rows
        if profile is not None and profile.exists():
            from bench.profile import format_summary, parse_collapsed, summarise

            summary = summarise(parse_collapsed(profile))
            out["lowrouter"]["profile"] = {"collapsed": profile.name, **summary}
            plan.log(format_summary(summary))
        plan.log(f"  lowrouter: {out['lowrouter']}")
        out["load_average"].append(os.getloadavg()[0])
    finally:
        upstream.stop()
    return out


def verdicts(figures: dict[str, Any]) -> list[Any]:
    from bench.report import Verdict

    if "lowrouter" not in figures or "floor" not in figures:
        return [Verdict("LLM-shaped load", figures.get("error", "not measured"), None)]
    lr, floor, n = figures["lowrouter"], figures["floor"], figures["streams"]
    done = lr["completed"] == n and lr["charged"] == n and lr["usage_rows_ok_with_cost"] == n
    added = (lr["delay_p99_ms"] or 0) - (floor["delay_p99_ms"] or 0)
    ratio = (
        lr["cpu_us_per_chunk"] / floor["cpu_us_per_chunk"]
        if lr["cpu_us_per_chunk"] and floor["cpu_us_per_chunk"]
        else None
    )
    label = f"LLM-shaped ({n} streams, one worker)"
    return [
        Verdict(
            f"{label}: every stream completes and is charged",
            f"{lr['completed']}/{n} completed, {lr['charged']}/{n} with a cost in the stream, "
            f"{lr['usage_rows_ok_with_cost']}/{n} usage rows ok with a cost "
            f"({lr['failed']} failed; the floor completed {floor['completed']}/{n})",
            done,
        ),
        Verdict(
            f"{label}: added delay between chunks p99",
            f"{added:.2f} ms (lowrouter {lr['delay_p99_ms']} ms, floor {floor['delay_p99_ms']} "
            "ms; target <= 5 ms)",
            added <= 5.0,
        ),
        Verdict(
            f"{label}: CPU per relayed chunk vs the floor",
            "not measured"
            if ratio is None
            else f"{ratio:.2f}x ({lr['cpu_us_per_chunk']} vs {floor['cpu_us_per_chunk']} µs; "
            "target <= 1.5x)",
            None if ratio is None else ratio <= 1.5,
        ),
        Verdict(
            f"{label}: worker RSS",
            f"peak {lr['peak_worker_rss_mb']} MB (target <= 200 MB)",
            lr["peak_worker_rss_mb"] <= 200,
        ),
    ]


def lines(figures: dict[str, Any]) -> list[str]:
    out = []
    for name in ("floor", "lowrouter"):
        f = figures.get(name)
        if not f:
            continue
        out.append(
            f"LLM-shaped {name:<9}: {f['completed']}/{f['streams']} completed, {f['chunks']} "
            f"chunks, delay p50 {f['delay_p50_ms']} ms p99 {f['delay_p99_ms']} ms max "
            f"{f['delay_max_ms']} ms, first chunk p50 {f['first_chunk_p50_ms']} ms, "
            f"{f['cpu_us_per_chunk']} µs CPU/chunk ({f.get('worker_cpu_us_per_chunk')} in the "
            f"worker), peak RSS {f['peak_worker_rss_mb']} MB"
        )
    if figures.get("load_average"):
        out.append(f"LLM-shaped load average: {figures['load_average']}")
    return out
