"""Browser tests: one headless Chromium (Debian's `chromium`, driven by Playwright) shared by every
test of this package, against a real uvicorn server with the demo catalogue on SQLite.

Without Playwright or Chromium the tests are skipped, and fail under CI=true. The accessibility
check runs axe-core, which the setup installs from npm into a git-ignored folder beside this file.
"""

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from domain.actor import Actor
from domain.money import parse_credits
from infrastructure.catalogue import DEMO_MODEL, demo_catalogue
from infrastructure.http.app import create_app
from infrastructure.http.dashboard import install_dashboard
from infrastructure.runtime import Runtime, open_runtime
from infrastructure.settings import load_settings
from tests.support.servers import LiveServer
from tests.support.stores import PEPPER

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"  # tests/artifacts, git-ignored
AXE_VERSION = "4.14.1"
AXE_DIR = Path(__file__).resolve().parent / ".axe"  # git-ignored
OPERATOR = Actor("operator", "cli:browser-e2e")


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"the browser tests need this under CI=true: {reason}")
    pytest.skip(reason)


@dataclass
class Chromium:
    sync_api: Any
    browser: Any

    def context(self, **options: Any) -> Any:
        return self.browser.new_context(**options)


@pytest.fixture(scope="package")
def chromium() -> Iterator[Chromium]:
    """One browser for the whole package; each test opens its own contexts (profiles)."""
    try:
        from playwright import sync_api
    except ImportError:
        _missing("the playwright package is not installed (pip install playwright)")
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} is missing (make browser, or apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield Chromium(sync_api, browser)
        finally:
            browser.close()


@pytest.fixture(scope="package")
def axe_source() -> str:
    """axe-core's script, installed with npm (a pinned version) on first use."""
    script = AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"
    if not script.exists():
        npm = shutil.which("npm")
        if npm is None:
            _missing("npm is missing: the accessibility check installs axe-core with it")
        done = subprocess.run(
            [
                npm,
                "install",
                "--no-save",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(AXE_DIR),
                f"axe-core@{AXE_VERSION}",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0 or not script.exists():
            _missing(f"npm could not install axe-core: {done.stderr[-500:]}")
    return script.read_text()


@dataclass
class Live:
    url: str
    runtime: Runtime
    management_key: str
    account_id: Any

    def chat(self, token: str) -> httpx.Response:
        return httpx.post(
            f"{self.url}/api/v1/chat/completions",
            headers={"Authorization": f"Bearer {token}"},
            json={"model": DEMO_MODEL, "messages": [{"role": "user", "content": "Hello there"}]},
            timeout=10,
        )


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    """The gateway with the dashboard, under uvicorn on a free port, on SQLite."""
    settings = load_settings(
        {"LOWROUTER_TOKEN_PEPPER": PEPPER, "LOWROUTER_DATA_DIR": str(tmp_path)},
        database_url=f"sqlite:///{tmp_path}/lowrouter.db",
    )
    runtime = open_runtime(settings)
    app = create_app(runtime, demo_catalogue())  # the demo upstream runs in-process
    install_dashboard(app)
    with LiveServer(app, name="dashboard-e2e") as url:
        opened = runtime.app.open_account("browser-e2e", OPERATOR, parse_credits("10"))
        yield Live(url, runtime, opened.token.value, opened.account.id)
