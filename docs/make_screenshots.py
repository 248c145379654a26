"""Draw the README's dashboard screenshots from a seeded, made-up month of usage.

    .venv/bin/python docs/make_screenshots.py        # writes docs/dashboard-overview.png, -keys.png

Needs Playwright and Debian's Chromium (`make browser`). Runs on a throwaway SQLite database with a
clock fixed at a made-up moment, so the pictures do not change from run to run (except tokens).
"""

import random
import socket
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from domain.actor import Actor
from domain.money import parse_credits
from domain.scope import Scope
from domain.usage import Usage
from infrastructure.catalogue import demo_catalogue
from infrastructure.http.app import create_app
from infrastructure.http.dashboard import install_dashboard
from infrastructure.runtime import open_runtime
from infrastructure.settings import load_settings

DOCS = Path(__file__).resolve().parent
NOW = datetime(2026, 3, 18, 15, 40, tzinfo=UTC)
OWNER = Actor("operator", "cli:screenshots")
MODELS = {
    "openai/gpt-4o-mini": 0.6,
    "anthropic/claude-sonnet-4-5": 0.25,
    "openai/text-embedding-3-small": 0.15,
}


class Clock:
    now = NOW - timedelta(days=50)

    def __call__(self) -> datetime:
        return self.now


def main() -> None:
    clock = Clock()
    folder = Path(tempfile.mkdtemp(prefix="lowrouter-shots-"))
    settings = load_settings(
        {"LOWROUTER_TOKEN_PEPPER": "screenshots", "LOWROUTER_DATA_DIR": str(folder)},
        database_url=f"sqlite:///{folder}/lowrouter.db",
    )
    runtime = open_runtime(settings, clock)
    app, spend = runtime.app, runtime.spend
    opened = app.open_account("acme", OWNER, parse_credits("250"))
    account = opened.account.id
    keys = {
        "prod-server": app.create_key(
            account, "prod-server", Scope(daily_limit=parse_credits("12")), OWNER
        ).key.id,
        "support-bot": app.create_key(
            account, "support-bot", Scope(daily_limit=parse_credits("4")), OWNER
        ).key.id,
        "local-dev": app.create_key(
            account, "local-dev", Scope(daily_limit=parse_credits("1")), OWNER
        ).key.id,
    }
    rng = random.Random(21)
    for day in range(47, -1, -1):
        for n in range(14):
            clock.now = NOW - timedelta(days=day, hours=n % 12, minutes=rng.randrange(60))
            if clock.now > NOW:
                continue
            name = ("prod-server",) * 6 + ("support-bot",) * 3 + ("local-dev",) * 5
            name = name[n]
            model = rng.choices(list(MODELS), list(MODELS.values()))[0]
            scale = 0.1 if name == "local-dev" else 1.6 if day < 9 else 1
            cost = int(rng.uniform(0.2, 0.45) * 1_000_000 * scale)
            request = f"req_{uuid.uuid4().hex}"
            spend.reserve(account, request, keys[name], model, cost, None).result(timeout=10)
            late = day == 0 and n == 7  # support-bot, from somewhere new
            spend.settle(
                account,
                request,
                cost,
                Usage(
                    key_name=name,
                    model=model,
                    provider=model.split("/")[0],
                    region="us",
                    prompt_tokens=rng.randrange(200, 4000),
                    completion_tokens=rng.randrange(50, 900),
                    status="ok" if rng.random() > 0.03 else "upstream_error",
                    status_code=200,
                    latency_ms=rng.randrange(300, 2400),
                    streamed=rng.random() > 0.5,
                    client_ip="203.0.113.77" if late else "198.51.100.10",
                    user_agent="OpenAI/Python 1.99.0",
                    api="embeddings" if "embedding" in model else "chat.completions",
                ),
            ).result(timeout=10)
    spend.record_refusal(account, keys["local-dev"], "daily_limit_exceeded")
    clock.now = NOW

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(runtime, demo_catalogue(f"http://127.0.0.1:{port}/demo/v1"), clock=clock)
    install_dashboard(app)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)

    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"http://127.0.0.1:{port}/dashboard/sign-in")
        page.get_by_label("Management key").fill(opened.token.value)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url("**/dashboard/overview")
        page.screenshot(path=str(DOCS / "dashboard-overview.png"), full_page=True)
        page.goto(f"http://127.0.0.1:{port}/dashboard/keys")
        page.screenshot(path=str(DOCS / "dashboard-keys.png"))
        browser.close()
    server.should_exit = True
    thread.join(timeout=10)
    runtime.close()


if __name__ == "__main__":
    main()
