"""Real peers in the same table: LiteLLM's proxy and Portkey's open-source gateway, installed by
the bench itself into bench/.peers/ (pinned versions, their own venv / node_modules), pointed at
the same fake upstream, and driven like every other target. A peer that cannot be installed or
started is skipped with a one-line note.

    .venv/bin/python -m bench.peers install     # only the installs (they take minutes once)
"""

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.processes import Server, free_port, start_server

PEERS_DIR = Path(__file__).resolve().parent / ".peers"
LITELLM = "litellm[proxy]==1.80.0"  # later ones need litellm-proxy, not on the registry
PORTKEY = "@portkey-ai/gateway@1.15.2"
LITELLM_KEY = "sk-bench-litellm-master"  # LiteLLM wants a master key that starts with sk-
INSTALL_TIMEOUT = 900


def litellm_venv() -> Path:
    return PEERS_DIR / "litellm"


def install_litellm() -> str | None:
    """The venv's litellm executable, installing it the first time; None (and why) otherwise."""
    venv = litellm_venv()
    exe = venv / "bin" / "litellm"
    marker = venv / f".installed-{LITELLM}"
    if exe.exists() and marker.exists():
        return None
    shutil.rmtree(venv, ignore_errors=True)
    done = subprocess.run(
        [sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return f"python -m venv failed: {done.stderr[-200:]}"
    try:
        done = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--quiet", LITELLM],
            capture_output=True,
            text=True,
            check=False,
            timeout=INSTALL_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return f"pip install {LITELLM} took over {INSTALL_TIMEOUT} s"
    if done.returncode != 0 or not exe.exists():
        return f"pip install {LITELLM} failed: {done.stderr.strip()[-200:]}"
    marker.touch()
    return None


def portkey_dir() -> Path:
    return PEERS_DIR / "portkey"


def portkey_entry() -> Path:
    return portkey_dir() / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"


def install_portkey() -> str | None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node/npm are not installed on this machine"
    folder = portkey_dir()
    marker = folder / f".installed-{PORTKEY.replace('/', '_')}"
    if portkey_entry().exists() and marker.exists():
        return None
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "package.json").write_text('{"name": "lowrouter-bench-peers", "private": true}\n')
    try:
        done = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--silent", PORTKEY],
            cwd=folder,
            capture_output=True,
            text=True,
            check=False,
            timeout=INSTALL_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return f"npm install {PORTKEY} took over {INSTALL_TIMEOUT} s"
    if done.returncode != 0 or not portkey_entry().exists():
        return f"npm install {PORTKEY} failed: {(done.stderr or done.stdout).strip()[-200:]}"
    marker.touch()
    return None


INSTALLERS = {"litellm": install_litellm, "portkey": install_portkey}


def install(names: list[str]) -> dict[str, str | None]:
    """Each peer's install problem (None: ready)."""
    PEERS_DIR.mkdir(parents=True, exist_ok=True)
    return {name: INSTALLERS[name]() for name in names}


# Starting -------------------------------------------------------------------------------------


def litellm_config(path: Path, upstream_base_url: str) -> Path:
    path.write_text(
        f"""model_list:
  - model_name: bench/fast
    litellm_params:
      model: openai/fast
      api_base: {upstream_base_url}
      api_key: none
general_settings:
  master_key: {LITELLM_KEY}
litellm_settings:
  telemetry: false
  drop_params: true
""",
        encoding="utf-8",
    )
    return path


@contextmanager
def running_peer(name: str, upstream: Server, work_dir: Path, nice: int = 0) -> Iterator[Server]:
    """The peer on a free port; yields the server (its `auth` header is in `peer_headers`)."""
    port = free_port()
    base = upstream.url + "/v1"
    if name == "litellm":
        config = litellm_config(work_dir / "litellm.yaml", base)
        command = [
            str(litellm_venv() / "bin" / "litellm"),
            "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
            "--num_workers", "1",
        ]  # fmt: skip
        env = {
            **os.environ,
            "LITELLM_LOG": "ERROR",
            "LITELLM_TELEMETRY": "False",
            "DISABLE_ADMIN_UI": "True",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # never fetch the cost map from the network
        }
        ready = "/health/liveliness"
    else:
        command = ["node", str(portkey_entry()), f"--port={port}", "--headless"]
        env = {**os.environ, "PORT": str(port), "NODE_ENV": "production"}
        ready = "/"
    server = start_server(
        name, command, port, env, work_dir, ready_path=ready, timeout=120, nice=nice
    )
    try:
        yield server
    finally:
        server.stop()


def peer_headers(name: str, upstream: Server) -> dict[str, str]:
    if name == "litellm":
        return {"authorization": f"Bearer {LITELLM_KEY}"}
    # Portkey forwards to the provider named in its headers, at a custom host.
    return {
        "x-portkey-provider": "openai",
        "x-portkey-custom-host": upstream.url + "/v1",
        "authorization": "Bearer none",
    }


def peer_path(name: str) -> str:
    return "/chat/completions" if name == "litellm" else "/v1/chat/completions"


def main() -> None:
    if sys.argv[1:] != ["install"]:
        sys.exit("usage: python -m bench.peers install")
    started = time.monotonic()
    for name, problem in install(list(INSTALLERS)).items():
        print(f"{name}: {problem or 'ready'}")
    print(f"{time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
