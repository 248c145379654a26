"""Nothing unauthenticated costs more than a small bound: the demo upstream is no public route,
every body is bounded before it is parsed, and JSON nesting is limited."""

import socket
import subprocess
import time
from pathlib import Path

import httpx

from tests.support.processes import (
    LOWROUTER,
    free_port,
    serve_environment,
    start_serve,
    wait_until_up,
)

HUNDRED_AND_FIVE_MB = 105 * 1024 * 1024
CHUNK = b"x" * (1024 * 1024)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def post_huge(port: int, path: str, *, chunked: bool, form: bool = False) -> int:
    """POST 105 MB to `path` with no key (chunked, or with a Content-Length); the status."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        framing = (
            b"Transfer-Encoding: chunked\r\n"
            if chunked
            else f"Content-Length: {HUNDRED_AND_FIVE_MB}\r\n".encode()
        )
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
            + b"Content-Type: "
            + (b"application/x-www-form-urlencoded" if form else b"application/json")
            + b"\r\n"
            + framing
            + b"\r\n"
        )
        try:
            for _ in range(HUNDRED_AND_FIVE_MB // len(CHUNK)):
                if chunked:
                    sock.sendall(b"%x\r\n" % len(CHUNK) + CHUNK + b"\r\n")
                else:
                    sock.sendall(CHUNK)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and hung up before the whole body: what we want
        response = sock.recv(65536)
    return int(response.split(b" ", 2)[1])


def test_a_105_mb_unauthenticated_post_is_refused_with_memory_bounded(tmp_path: Path) -> None:
    port = free_port()
    env = serve_environment(tmp_path, LOWROUTER_BACKGROUND="inline")
    process = start_serve(
        env,
        port,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_up(port, process)
        time.sleep(0.5)
        before = peak_rss_mb(process.pid)
        statuses = [
            post_huge(port, "/demo/v1/chat/completions", chunked=True),
            post_huge(port, "/demo/v1/chat/completions", chunked=False),
            post_huge(port, "/api/v1/chat/completions", chunked=True),
            post_huge(port, "/api/v1/chat/completions", chunked=False),
            post_huge(port, "/dashboard/sign-in", chunked=True, form=True),
        ]
        grown = peak_rss_mb(process.pid) - before
        assert grown < 30, f"peak RSS grew by {grown:.0f} MB"
        # The demo upstream is not a public route, not even on the demo deployment.
        assert set(statuses[:2]) <= {404, 413}, statuses
        assert set(statuses[2:]) <= {401, 403, 413}, statuses
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_demo_model_still_answers_through_the_in_process_upstream(tmp_path: Path) -> None:
    port = free_port()
    env = serve_environment(tmp_path, LOWROUTER_BACKGROUND="inline")
    process = start_serve(
        env,
        port,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_up(port, process)
        cli = [LOWROUTER, "--format", "json"]
        subprocess.run(
            [*cli, "accounts", "create", "acme", "--credits", "5"],
            env=env,
            check=True,
            capture_output=True,
        )
        created = subprocess.run(
            [*cli, "keys", "create", "--account", "acme", "--name", "k"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        import json

        token = json.loads(created.stdout)["key"]
        answer = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/chat/completions",
            headers={"Authorization": f"Bearer {token}"},
            json={"model": "lowrouter/echo", "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"] == "Echo: hi"
        with httpx.stream(
            "POST",
            f"http://127.0.0.1:{port}/api/v1/chat/completions",
            headers={"Authorization": f"Bearer {token}"},
            json={
                "model": "lowrouter/echo",
                "stream": True,
                "messages": [{"role": "user", "content": "hi there"}],
            },
            timeout=30,
        ) as streamed:
            text = "".join(streamed.iter_text())
        assert (
            streamed.status_code == 200
            and "[DONE]" in text
            and '"there"' in text.replace('" there"', '"there"')
        )
    finally:
        process.terminate()
        process.wait(timeout=30)
