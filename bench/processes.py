"""Server processes under test: start on a free port, wait until ready, measure, stop.

CPU and memory come from psutil when it is installed (the runner installs it with pip), else
from /proc. A server's "workers" are the processes that serve requests: the process itself with
one worker, or uvicorn's worker children with `--workers N`.
"""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def uvicorn_command(app: str, port: int, *, factory: bool = False, workers: int = 1) -> list[str]:
    """The same server stack for every target: uvicorn, loop and http "auto" (uvloop and
    httptools when installed, as `lowrouter serve` has it), no access log."""
    command = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    command += ["--log-level", "warning", "--no-access-log"]
    if factory:
        command.append("--factory")
    if workers > 1:
        command += ["--workers", str(workers)]
    return command


def serve_command(port: int, workers: int = 1) -> list[str]:
    """lowrouter as its users run it: `lowrouter serve` (uvicorn, loop and http "auto", no access
    log) with its background process (projections, reconciler, chain) beside the workers."""
    command = [sys.executable, "-m", "infrastructure.cli", "serve", "--host", "127.0.0.1"]
    return [*command, "--port", str(port), "--workers", str(workers)]


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    workers_expected: int = 1
    requests_served: int = 0
    memory_marks: list[dict[str, object]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_pids(self) -> list[int]:
        if self.workers_expected == 1:
            return [self.process.pid]
        return [pid for pid in child_pids(self.process.pid) if not _is_helper(pid)]

    def all_pids(self) -> list[int]:
        return [self.process.pid, *child_pids(self.process.pid)]

    def cpu_seconds(self) -> float:
        return sum(process_cpu_seconds(pid) for pid in self.all_pids())

    def worker_rss_mb(self) -> list[float]:
        return [round(process_rss_bytes(pid) / 2**20, 1) for pid in self.worker_pids()]

    def total_rss_mb(self) -> float:
        return round(sum(process_rss_bytes(pid) for pid in self.all_pids()) / 2**20, 1)

    def mark_memory(self) -> None:
        """Note RSS per worker against the number of requests served so far."""
        self.memory_marks.append(
            {"requests": self.requests_served, "worker_rss_mb": self.worker_rss_mb()}
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(
    name: str,
    command: Sequence[str],
    port: int,
    env: Mapping[str, str],
    log_dir: Path,
    workers: int = 1,
    ready_path: str = "/healthz",
    timeout: float = 60.0,
    nice: int = 0,
    source: Path | None = None,
) -> Server:
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            list(command),
            cwd=source or ROOT,  # `python -m` imports the code of its working directory first
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=priority(nice),
        )
    server = Server(name, port, process, log_path, workers_expected=workers)
    try:
        wait_ready(server, ready_path, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def priority(nice: int) -> Callable[[], None] | None:
    """For Popen's preexec_fn: run the child (and its children) at this niceness."""
    if nice == 0:
        return None
    return lambda: os.setpriority(os.PRIO_PROCESS, 0, nice)


def wait_ready(server: Server, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited: see {server.log_path}")
        try:
            with urllib.request.urlopen(server.url + path, timeout=2) as response:
                if response.status == 200 and len(server.worker_pids()) >= server.workers_expected:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{server.name} was not ready in {timeout:.0f} s: see {server.log_path}")


# Process figures: psutil when available, else /proc -----------------------------------------


def child_pids(pid: int) -> list[int]:
    try:
        import psutil

        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except ImportError:
        return _proc_children(pid)
    except Exception:  # the process is gone
        return []


def process_cpu_seconds(pid: int) -> float:
    try:
        import psutil

        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)
    except ImportError:
        fields = _proc_stat(pid)
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS if fields else 0.0
    except Exception:
        return 0.0


def process_rss_bytes(pid: int) -> int:
    try:
        import psutil

        return int(psutil.Process(pid).memory_info().rss)
    except ImportError:
        fields = _proc_stat(pid)
        return int(fields[21]) * PAGE_SIZE if fields else 0
    except Exception:
        return 0


def _is_helper(pid: int) -> bool:
    """Children that are not workers: multiprocessing's resource tracker (a child of uvicorn's
    supervisor) and lowrouter's background process (projections, reconciler, chain)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    helpers = (b"resource_tracker", b"semaphore_tracker", b"projections\x00run")
    return any(helper in cmdline for helper in helpers)


def _proc_stat(pid: int) -> list[str]:
    """/proc/PID/stat fields after the command name (field 3 onwards, 0-based here)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return text[text.rindex(")") + 2 :].split()


def _proc_children(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _proc_stat(int(entry.name))
            if fields:
                parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def machine_cpu_times() -> tuple[int, int] | None:
    """(busy, total) clock ticks of all cores since boot, from /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_percent(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """How busy the whole machine was between two readings: 100 = every core, all the time."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return round(100 * (after[0] - before[0]) / (after[1] - before[1]), 1)
