"""The one table, the targets of issue 18 with PASS/FAIL, and the machine's description."""

import os
import platform
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.matrix import Row, TargetReport

FLOOR = "bare-aiohttp"  # the floor every ratio is taken against (a pooled aiohttp proxy)
PACKAGES = (
    "starlette", "uvicorn", "uvloop", "httptools", "httpx", "httpcore", "httpx-aiohttp",
    "aiohttp", "eventsourcing", "sqlalchemy", "psycopg", "psycopg-pool", "orjson", "psutil",
    "py-spy",
)  # fmt: skip


def bare_name(transport: str) -> str:
    return f"bare-{transport}"


@dataclass(frozen=True)
class Index:
    """Rows by (target, mode, concurrency)."""

    rows: dict[tuple[str, str, int], Row]

    @classmethod
    def of(cls, reports: list[TargetReport]) -> "Index":
        return cls({(r.target, r.mode, r.concurrency): r for t in reports for r in t.rows})

    def get(self, target: str, mode: str, concurrency: int) -> Row | None:
        return self.rows.get((target, mode, concurrency))


def comparisons(index: Index, row: Row, transport: str) -> dict[str, float | None]:
    floor = index.get(FLOOR, row.mode, row.concurrency)
    same = index.get(bare_name(transport), row.mode, row.concurrency)

    def ratio(base: Row | None) -> float | None:
        return round(row.result.rps / base.result.rps, 2) if base and base.result.rps else None

    return {
        "added_p50_ms": round(row.result.p50_ms - floor.result.p50_ms, 2) if floor else None,
        "added_p99_ms": round(row.result.p99_ms - floor.result.p99_ms, 2) if floor else None,
        "x_floor": ratio(floor),
        "x_same_client": ratio(same),
    }


HEADER = (
    f"{'target':<27}{'mode':<7}{'c':>4}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}"
    f"{'+p50':>8}{'+p99':>9}{'xfloor':>7}{'xsame':>6}{'err':>6}{'CPU%':>6}{'CPUms/r':>8}"
    f"{'RSS MB':>8}{'box%':>6}"
)


def _num(value: float | None, width: int, digits: int = 2) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def table(reports: list[TargetReport]) -> tuple[str, list[dict[str, Any]]]:
    index = Index.of(reports)
    lines = [HEADER, "-" * len(HEADER)]
    records = []
    for report in reports:
        for row in report.rows:
            extra = comparisons(index, row, report.target.transport)
            lines.append(
                f"{row.target:<27}{row.mode:<7}{row.concurrency:>4}{row.result.rps:>8.0f}"
                f"{row.result.p50_ms:>9.2f}{row.result.p99_ms:>9.2f}"
                f"{_num(extra['added_p50_ms'], 8)}{_num(extra['added_p99_ms'], 9)}"
                f"{_num(extra['x_floor'], 7)}{_num(extra['x_same_client'], 6)}"
                f"{row.result.errors:>6}{row.cpu_percent:>6.0f}"
                f"{_num(row.cpu_ms_per_request, 8)}{row.rss_mb:>8.1f}"
                f"{_num(row.machine_busy_percent, 6, 0)}"
            )
            records.append({**row.as_dict(), **extra})
    return "\n".join(lines), records


# Targets ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    name: str
    value: str
    passed: bool | None  # None: could not be measured

    def line(self) -> str:
        word = {True: "PASS", False: "FAIL", None: "N/A "}[self.passed]
        return f"{word}  {self.name}: {self.value}"


def _rps_ratio(index: Index, target: str, base: str, mode: str, c: int) -> float | None:
    row, floor = index.get(target, mode, c), index.get(base, mode, c)
    if row is None or floor is None or not floor.result.rps:
        return None
    return row.result.rps / floor.result.rps


def _ratio_verdict(
    index: Index, target: str, base: str, mode: str, c: int, minimum: float, label: str
) -> Verdict:
    ratio = _rps_ratio(index, target, base, mode, c)
    if ratio is None:
        return Verdict(label, "not measured", None)
    return Verdict(label, f"{ratio:.0%} (target >= {minimum:.0%})", ratio >= minimum)


# Issue 18's targets: requests/s at c=64 against the floor, one worker, per store and mode.
RATIO_TARGETS = (
    ("lowrouter-pg", "PG", {"json": 0.60, "stream": 0.70}),
    ("lowrouter-sqlite", "SQLite", {"json": 0.70, "stream": 0.70}),
)
ADDED_P50_MS, ADDED_P99_MS = 1.0, 3.0  # c=1, over the floor


def http_verdicts(reports: list[TargetReport]) -> list[Verdict]:
    index = Index.of(reports)
    verdicts = []
    for mode in ("json", "stream"):
        for target, store, minimum in RATIO_TARGETS:
            label = f"{store} {mode} c=64 req/s vs the floor ({FLOOR})"
            verdicts.append(_ratio_verdict(index, target, FLOOR, mode, 64, minimum[mode], label))
        verdicts += _added_latency(index, mode)
        floor_scaling = _rps_ratio(index, "bare-aiohttp-w2", FLOOR, mode, 64)
        if floor_scaling is not None:
            verdicts.append(
                Verdict(
                    f"the floor's {mode} --workers 2 vs 1 at c=64 (what this machine allows)",
                    f"{floor_scaling:.2f}x",
                    None,
                )
            )
        scaling = _rps_ratio(index, "lowrouter-pg-w2", "lowrouter-pg", mode, 64)
        if scaling is not None:
            verdicts.append(
                Verdict(
                    f"PG {mode} --workers 2 vs 1 at c=64, one account (reported, no target)",
                    f"{scaling:.2f}x",
                    None,
                )
            )
    verdicts += _peer_lines(index)
    return verdicts


def _peer_lines(index: Index) -> list[Verdict]:
    """Where lowrouter (PostgreSQL, one worker) stands beside each peer measured: reported."""
    out = []
    for peer in ("litellm", "portkey"):
        for mode in ("json", "stream"):
            ours, theirs = index.get("lowrouter-pg", mode, 64), index.get(peer, mode, 64)
            low, their_low = index.get("lowrouter-pg", mode, 1), index.get(peer, mode, 1)
            if not (ours and theirs and low and their_low) or not theirs.result.rps:
                continue
            out.append(
                Verdict(
                    f"lowrouter-pg vs {peer} ({mode}; reported, no target)",
                    f"c=64 {ours.result.rps / theirs.result.rps:.2f}x the requests/s "
                    f"({ours.result.rps:.0f} vs {theirs.result.rps:.0f}), "
                    f"c=1 p50 {low.result.p50_ms:.2f} vs {their_low.result.p50_ms:.2f} ms",
                    None,
                )
            )
    return out


def _added_latency(index: Index, mode: str) -> list[Verdict]:
    row, floor = index.get("lowrouter-pg", mode, 1), index.get(FLOOR, mode, 1)
    label = f"PG {mode} c=1 added latency over the floor"
    if row is None or floor is None:
        return [Verdict(label, "not measured", None)]
    p50 = row.result.p50_ms - floor.result.p50_ms
    p99 = row.result.p99_ms - floor.result.p99_ms
    return [
        Verdict(f"{label} p50", f"{p50:.2f} ms (target <= {ADDED_P50_MS} ms)", p50 <= ADDED_P50_MS),
        Verdict(f"{label} p99", f"{p99:.2f} ms (target <= {ADDED_P99_MS} ms)", p99 <= ADDED_P99_MS),
    ]


def lag_verdicts(reports: list[TargetReport]) -> list[Verdict]:
    verdicts = []
    for report in reports:
        lags = [r.lag for r in report.rows if r.lag]
        if not lags:
            continue
        worst = max(lag["max_behind_s"] for lag in lags)
        events = max(lag["max_lag_events"] for lag in lags)
        verdicts.append(
            Verdict(
                f"{report.target.name} usage-history lag at c=64",
                f"max {events} events, {worst:.3f} s behind (target < 1 s)",
                worst < 1.0,
            )
        )
    return verdicts


def memory_verdicts(reports: list[TargetReport]) -> list[Verdict]:
    """RSS per worker against requests served. Memory rises with the concurrency served (each
    connection has buffers; the matrix ends at c=256), so flatness is judged on the soak: the
    extra c=64 load after every concurrency was served, where only the request count grows."""
    verdicts = []
    for report in reports:
        if report.target.kind != "lowrouter" or not report.memory_marks:
            continue
        marks, label = report.memory_marks, f"{report.target.name} RSS per worker"
        early = next((m for m in marks if m["requests"] >= 10_000), None)
        last = marks[-1]
        peak = max(max(m["worker_rss_mb"], default=0) for m in marks)
        if early is None or early is last:
            value = f"{last['worker_rss_mb']} MB after {last['requests']} requests (peak {peak} MB)"
            verdicts.append(Verdict(label, value + "; too few requests to judge flatness", None))
            continue

        def rss(mark: dict[str, Any]) -> float:
            return float(max(mark["worker_rss_mb"], default=0))

        value = (
            f"{early['worker_rss_mb']} MB after {early['requests']} requests, "
            f"{last['worker_rss_mb']} MB after {last['requests']} (peak {peak} MB, "
            f"growth {rss(last) - rss(early):+.1f} MB"
        )
        soaked = len(marks) > len(report.rows)
        if not soaked:
            growth = rss(last) - rss(early)
            value += "; target <= 150 MB, flat within 10 MB)"
            verdicts.append(Verdict(label, value, peak <= 150 and growth <= 10))
            continue
        settled = marks[len(report.rows) - 1]  # every concurrency served: the soak starts here
        growth = rss(last) - rss(settled)
        value += (
            f"; during the soak, {settled['requests']} -> {last['requests']} requests: "
            f"{growth:+.1f} MB; target <= 150 MB, flat within 5 MB over the soak)"
        )
        verdicts.append(Verdict(label, value, peak <= 150 and growth <= 5))
    return verdicts


def ledger_verdicts(figures: dict[str, dict[str, Any]]) -> list[Verdict]:
    verdicts = []
    for store, data in figures.items():
        if "error" in data:
            verdicts.append(Verdict(f"{store} ledger figures", data["error"], None))
            continue
        rebuild = data["rebuild"]
        verdicts.append(
            Verdict(
                f"{store} rebuild of all projections",
                f"{rebuild['events_per_s']} events/s over {rebuild['log_events']} events "
                "(target >= 20,000/s)",
                (rebuild["events_per_s"] or 0) >= 20_000,
            )
        )
        replay = data["replay"]
        verdicts.append(
            Verdict(
                f"{store} replay of a {replay['page_events']}-event account-day page",
                f"{replay['with_snapshot_s'] * 1000:.1f} ms from snapshot + "
                f"{replay['tail_events']} events, {replay['from_scratch_s']:.2f} s from scratch "
                "(target <= 1 s)",
                replay["with_snapshot_s"] <= 1.0,
            )
        )
    return verdicts


# The machine ----------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def calibration_ms() -> float:
    """A fixed pure-Python loop: compares this machine's (and this moment's) speed with others."""
    started = time.perf_counter()
    total = 0
    for i in range(2_000_000):
        total += i % 7
    return round((time.perf_counter() - started) * 1000, 1)


def machine() -> dict[str, Any]:
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "packages": {name: _version(name) for name in PACKAGES},
        "load_average_at_start": os.getloadavg(),
        "calibration_loop_ms": calibration_ms(),
    }


def ledger_lines(figures: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for store, data in figures.items():
        if "error" in data:
            lines.append(f"{store}: {data['error']}")
            continue
        gen, up, build = data["generate"], data["catch_up"], data["rebuild"]
        look, replay = data["lookup"], data["replay"]
        lines += [
            f"{store}: ledger writes {gen['events']} events in {gen['seconds']} s "
            f"({gen['pairs_per_s']} reserve+settle pairs/s, {gen['commands_per_batch']} "
            f"commands per group commit, {gen['conflicts']} conflicts)",
            f"{store}: catch-up after the burst {up['events_per_s']} events/s "
            f"({up['log_events']} events in {up['seconds']} s); rebuild {build['events_per_s']} "
            f"events/s ({build['seconds']} s; 1M events would take "
            f"~{1_000_000 / max(1, build['events_per_s'] or 1):.0f} s)",
            f"{store}: key lookup {look['lookup_per_s']}/s, whole bearer check "
            f"{look['authenticate_per_s']}/s, lookup via SQLAlchemy "
            f"{look['find_key_sqlalchemy_per_s']}/s (one thread)",
            f"{store}: replay of the {replay['page_events']}-event page "
            f"{replay['with_snapshot_s'] * 1000:.1f} ms from snapshot + {replay['tail_events']} "
            f"events; {replay['from_scratch_s']} s from scratch",
        ]
    return lines
