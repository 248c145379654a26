"""`lowrouter serve`: a configuration error stops it at start-up with one line; a good start
prints the URL and how to create a first key, and serves."""

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import PEPPER
from tests.spend.test_two_gateways import free_port

LOWROUTER = str(Path(sys.executable).with_name("lowrouter"))


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "LOWROUTER_DATABASE_URL": f"sqlite:///{tmp_path}/lowrouter.db",
        "LOWROUTER_TOKEN_PEPPER": PEPPER,
        "LOWROUTER_DATA_DIR": str(tmp_path),
        **extra,
    }


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
    env = environment(tmp_path, LOWROUTER_CONFIG=str(config))
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
    process = subprocess.Popen(
        [LOWROUTER, "serve", "--port", str(port)],
        env=environment(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise AssertionError("serve did not start")
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}/api/v1" in output
    assert "lowrouter accounts create" in output and "lowrouter keys create" in output
    assert "DEMO" in output
