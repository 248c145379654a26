"""Profiling a gateway worker under load with py-spy: collapsed stacks of the thread holding the
GIL (`--gil`: where the worker's Python CPU time goes, waiting excluded), summarised into shares by
thread, by package and by function. The collapsed file loads into speedscope or flamegraph.pl."""

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

LINES = bool(os.environ.get("BENCH_PROFILE_LINES"))  # keep line numbers (for a closer look)
FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*)\)$")


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def start_recording(pid: int, seconds: int, output: Path) -> subprocess.Popen[bytes]:
    """py-spy without pausing the target (--nonblocking), 100 samples a second."""
    binary = py_spy()
    if binary is None:
        raise RuntimeError("py-spy is not installed")
    command = [binary, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "100"]
    command += ["--nonblocking", "--gil", "--output", str(output)]
    command += ["--format", "raw", "--threads"] + ([] if LINES else ["--nolineno"])
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def parse_collapsed(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks.append((frames.split(";"), int(count)))
    return stacks


def _package(file: str) -> str:
    parts = file.split("/")
    if parts[0] in ("application", "infrastructure", "projections", "domain"):
        return "/".join(parts[:2]) if len(parts) > 1 else parts[0]
    return parts[0].removesuffix(".py")


def summarise(stacks: list[tuple[list[str], int]], top: int = 20) -> dict[str, Any]:
    """Shares (% of all samples): by thread, by package and by function,
    inclusive (anywhere on the stack, counted once) and self (the innermost frame)."""
    total = sum(count for _, count in stacks) or 1
    threads: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    packages_self: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    for frames, count in stacks:
        thread, calls = (frames[0], frames[1:]) if frames[0].startswith("thread") else ("?", frames)
        threads[_thread_name(thread, calls)] += count
        names = [_name(frame) for frame in calls]
        for name in set(names):
            inclusive[name] += count
        for package in {_package(_file(frame)) for frame in calls}:
            packages[package] += count
        if names:
            leaf[names[-1]] += count
            packages_self[_package(_file(calls[-1]))] += count

    def share(counter: Counter[str], n: int = top) -> list[tuple[str, float]]:
        return [(name, round(100 * count / total, 1)) for name, count in counter.most_common(n)]

    return {
        "samples": total,
        "threads": share(threads, 10),
        "packages_inclusive": share(packages, 25),
        "packages_self": share(packages_self, 15),
        "functions_inclusive": share(inclusive, 40),
        "functions_self": share(leaf, top),
    }


def _name(frame: str) -> str:
    match = FRAME.match(frame)
    if not match:
        return frame
    return f"{match['function']} ({match['file']})"


def _file(frame: str) -> str:
    match = FRAME.match(frame)
    return match["file"] if match else frame


def _thread_name(thread: str, calls: list[str]) -> str:
    """py-spy's "thread (ID): NAME" as NAME, the event loop's MainThread named as such."""
    name = thread.partition(": ")[2] or thread
    if name == "MainThread":
        return "MainThread (the event loop)"
    return name


def format_summary(summary: dict[str, Any], limit: int = 12) -> str:
    lines = [f"samples: {summary['samples']}"]
    for title, key in (
        ("threads", "threads"),
        ("packages (inclusive)", "packages_inclusive"),
        ("packages (self)", "packages_self"),
        ("functions (inclusive)", "functions_inclusive"),
        ("functions (self)", "functions_self"),
    ):
        lines.append(f"{title}:")
        lines += [f"  {pct:5.1f}%  {name}" for name, pct in summary[key][:limit]]
    return "\n".join(lines)
