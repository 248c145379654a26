"""Load generation: wrk (installed from Debian's packages when missing) with a Lua script that
POSTs a fixed body and prints its summary as JSON; or, where wrk cannot be had, a small asyncio
HTTP/1.1 keep-alive generator in Python (much slower: its figures are a lower bound, and the run
says so).
"""

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.processes import priority

WRK_TIMEOUT = "30s"
MARK = "BENCH_JSON "

LUA_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"socket_errors":%d,"non_2xx":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
"""

LUA_TOKENS = r"""
local turn = 0
request = function()
  turn = turn % #tokens + 1
  wrk.headers["authorization"] = "Bearer " .. tokens[turn]
  return wrk.format(nil, nil, nil, nil)
end
"""


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    socket_errors: int
    non_2xx: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> int:
        return self.socket_errors + self.non_2xx

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "rps": round(self.rps, 1), "errors": self.errors}


@dataclass(frozen=True)
class Load:
    """What to send: one POST with fixed headers and body."""

    url: str
    body: bytes
    headers: dict[str, str]
    # Bearer tokens to take in turn, one per request (the many-account load); empty: the headers'
    tokens: tuple[str, ...] = ()


def ensure_wrk() -> str | None:
    """The path of wrk, installing it with apt-get when missing (as root); None if impossible."""
    found = shutil.which("wrk")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        return None
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([apt, "update", "-qq"], check=False, env=env, **quiet)  # type: ignore[call-overload]
    subprocess.run([apt, "install", "-y", "-qq", "wrk"], check=False, env=env, **quiet)  # type: ignore[call-overload]
    return shutil.which("wrk")


class Wrk:
    def __init__(self, path: str, nice: int = 0) -> None:
        self.path = path
        self.name = "wrk"
        self.nice = nice

    def run(self, load: Load, concurrency: int, seconds: float) -> LoadResult:
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
            script.write(lua_script(load))
        try:
            command = [self.path, "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s"]
            command += ["--latency", "--timeout", WRK_TIMEOUT, "-s", script.name, load.url]
            done = subprocess.run(
                command, capture_output=True, text=True, check=False, preexec_fn=priority(self.nice)
            )
        finally:
            Path(script.name).unlink(missing_ok=True)
        for line in done.stdout.splitlines():
            if line.startswith(MARK):
                return _from_wrk(json.loads(line[len(MARK) :]))
        raise RuntimeError(f"wrk failed: {done.stdout[-500:]} {done.stderr[-500:]}")


def lua_script(load: Load) -> str:
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(load.body.decode())}"]
    for name, value in load.headers.items():
        lines.append(f"wrk.headers[ {_lua_string(name)} ] = {_lua_string(value)}")
    if load.tokens:
        lines.append("local tokens = {" + ",".join(_lua_string(t) for t in load.tokens) + "}")
        lines.append(LUA_TOKENS)
    return "\n".join(lines) + "\n" + LUA_DONE


def _lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


def _from_wrk(data: dict[str, float]) -> LoadResult:
    ms = 1000.0
    return LoadResult(
        requests=int(data["requests"]),
        seconds=data["duration_us"] / 1e6,
        socket_errors=int(data["socket_errors"]),
        non_2xx=int(data["non_2xx"]),
        p50_ms=data["p50_us"] / ms,
        p90_ms=data["p90_us"] / ms,
        p99_ms=data["p99_us"] / ms,
        max_ms=data["max_us"] / ms,
        mean_ms=data["mean_us"] / ms,
    )


# The fallback: asyncio keep-alive connections in this process -----------------------------


class PythonLoad:
    def __init__(self) -> None:
        self.name = "python-asyncio (wrk unavailable: figures are a lower bound)"

    def run(self, load: Load, concurrency: int, seconds: float) -> LoadResult:
        return asyncio.run(_drive(load, concurrency, seconds))


async def _drive(load: Load, concurrency: int, seconds: float) -> LoadResult:
    from urllib.parse import urlsplit

    parts = urlsplit(load.url)
    head = f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in load.headers.items())
    tail = f"Content-Length: {len(load.body)}\r\n\r\n"
    requests = [
        (head + f"Authorization: Bearer {token}\r\n" + tail).encode() + load.body
        for token in load.tokens
    ] or [(head + tail).encode() + load.body]
    latencies: list[float] = []
    counters = {"socket": 0, "status": 0}
    started = time.perf_counter()
    deadline = started + seconds
    workers = [
        _connection(
            parts.hostname or "127.0.0.1",
            parts.port or 80,
            requests[i::concurrency] or requests,
            deadline,
            latencies,
            counters,
        )
        for i in range(concurrency)
    ]
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0.0

    return LoadResult(
        requests=len(latencies),
        seconds=elapsed,
        socket_errors=counters["socket"],
        non_2xx=counters["status"],
        p50_ms=pct(0.50),
        p90_ms=pct(0.90),
        p99_ms=pct(0.99),
        max_ms=latencies[-1] if latencies else 0.0,
        mean_ms=sum(latencies) / len(latencies) if latencies else 0.0,
    )


async def _connection(
    host: str,
    port: int,
    requests: list[bytes],
    deadline: float,
    latencies: list[float],
    counters: dict[str, int],
) -> None:
    reader = writer = None
    turn = 0
    while time.perf_counter() < deadline:
        request = requests[turn % len(requests)]
        turn += 1
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            assert reader is not None
            began = time.perf_counter()
            writer.write(request)
            status = await _read_response(reader)
            latencies.append((time.perf_counter() - began) * 1000)
            if not 200 <= status < 400:
                counters["status"] += 1
        except (OSError, asyncio.IncompleteReadError, ValueError):
            counters["socket"] += 1
            writer = None
    if writer is not None:
        writer.close()


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


def load_generator(nice: int = 0) -> Wrk | PythonLoad:
    path = ensure_wrk()
    return Wrk(path, nice) if path else PythonLoad()
