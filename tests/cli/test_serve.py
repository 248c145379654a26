"""`lowrouter serve`: a configuration error stops it at start-up with one line; a good start
prints the URL and how to create a first key, and serves."""

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.support.processes import (
    LOWROUTER,
    background_pid,
    free_port,
    serve_environment,
    start_serve,
    wait_until_up,
)


def test_a_config_error_stops_serve_with_one_line_naming_file_entry_and_problem(
    tmp_path: Path,
) -> None:
    config = tmp_path / "lowrouter.toml"
    config.write_text(
        '[providers."openai"]\nbase_url = "https://api.openai.com/v1"\n'
        'api_key_env = "LOWROUTER_TEST_MISSING_KEY"\nregion = "us"\n\n'
        '[models."openai/gpt-4o"]\nprovider = "opnai"\nprompt_price_per_million = "2.5"\n'
        'completion_price_per_million = "10"\nmax_output_tokens = 100\n'
    )
    env = serve_environment(tmp_path, LOWROUTER_CONFIG=str(config))
    env.pop("LOWROUTER_TEST_MISSING_KEY", None)
    result = subprocess.run(
        [LOWROUTER, "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "lowrouter.toml" in lines[0] and "Traceback" not in result.stderr


def test_serve_prints_the_url_and_how_to_create_a_first_key_and_serves(tmp_path: Path) -> None:
    port = free_port()
    process = start_serve(
        serve_environment(tmp_path),
        port,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until_up(port, process)
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}/api/v1" in output
    assert "lowrouter accounts create" in output and "lowrouter keys create" in output
    assert "DEMO" in output


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not alive(pid)


def serve_with_its_background(tmp_path: Path, port: int, **output: Any) -> subprocess.Popen[str]:
    """`lowrouter serve` as users start it: it starts its own background process."""
    env = serve_environment(tmp_path)  # no LOWROUTER_BACKGROUND: serve starts its own
    return start_serve(env, port, text=True, **output)


@contextmanager
def following_the_log(tmp_path: Path, **popen: Any) -> Iterator[subprocess.Popen[str]]:
    """`lowrouter projections run`, once it says it follows the log; killed if still running."""
    process = subprocess.Popen(
        [LOWROUTER, "projections", "run"],
        env=serve_environment(tmp_path),
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )
    try:
        assert process.stderr is not None
        assert "following the event log" in process.stderr.readline()
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serve_runs_the_projections_in_a_process_of_their_own_and_restarts_it(
    tmp_path: Path,
) -> None:
    port = free_port()
    env = serve_environment(tmp_path)
    process = serve_with_its_background(
        tmp_path, port, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        wait_until_up(port, process)
        first = background_pid(process.pid)
        cli = [LOWROUTER, "--format", "json"]
        subprocess.run([*cli, "accounts", "create", "acme", "--credits", "5"], env=env, check=True)
        created = subprocess.run(
            [*cli, "keys", "create", "--account", "acme", "--name", "k"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        token = json.loads(created.stdout)["key"]
        answer = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/chat/completions",
            headers={"Authorization": f"Bearer {token}"},
            json={"model": "lowrouter/echo", "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        # The worker does not project; the background process does: the usage is projected.
        assert usage_lag(env) == 0

        os.kill(first, signal.SIGKILL)
        second = background_pid(process.pid, not_this=first)
        assert second != first and alive(second)
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert "restarting it" in output
    assert gone(second, timeout=10), "the background process outlived serve"


def usage_lag(env: dict[str, str], timeout: float = 10.0) -> int:
    """The usage projection's lag, once it is 0 or the time is up. `projections status` only
    reads positions: only a running projection process moves them."""
    deadline = time.monotonic() + timeout
    while True:
        listed = subprocess.run(
            [LOWROUTER, "--format", "json", "projections", "status"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        usage = next(p for p in json.loads(listed.stdout)["data"] if p["name"] == "usage")
        if usage["lag"] == 0 or time.monotonic() > deadline:
            return int(usage["lag"])
        time.sleep(0.2)


def test_projections_run_stops_on_a_burst_of_sigterms(tmp_path: Path) -> None:
    """serve SIGTERMs its background process, and the kernel does again as serve exits: a
    second signal arriving inside the first's handler must not deadlock it."""
    with following_the_log(tmp_path) as process:
        for _ in range(50):
            process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0


def test_projections_run_stops_on_sigint_even_when_started_with_it_ignored(
    tmp_path: Path,
) -> None:
    """A script's background job starts with SIGINT ignored; Ctrl-C semantics must still hold."""
    ignoring_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731
    with following_the_log(tmp_path, preexec_fn=ignoring_sigint) as process:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
        assert process.stderr is not None and "stopped at" in process.stderr.read()


def test_the_background_process_ends_with_serve_even_when_serve_is_killed(
    tmp_path: Path,
) -> None:
    port = free_port()
    process = serve_with_its_background(
        tmp_path, port, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until_up(port, process)
        child = background_pid(process.pid)
        process.kill()  # no chance to stop its child itself
        process.wait(timeout=10)
        assert gone(child, timeout=15), "the background process outlived a killed serve"
    finally:
        if process.poll() is None:
            process.kill()
