"""Settling after the answer (README, "Settling after the answer"): an answer is written once its
settlement is queued, before the settlement is durable. kill -9 of a real `lowrouter serve`
worker on PostgreSQL inside that window — both answers received, both settlements held back by a
test seam (tests/support/held_settlements.py) — leaves each request's hold durable, and the
reconciler settles each at the held amount, marked `unsettled`: the promise this trades is that
such an answer's `usage.cost` is what the ledger charged."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from domain.scope import Scope
from infrastructure.runtime import open_runtime
from infrastructure.settings import load_settings
from tests.fake_upstream import fake_environ, run_fake_upstream, write_catalogue
from tests.support.faults import OPERATOR, Gateway
from tests.support.ledger_check import check_books, replay
from tests.support.processes import free_port, wait_until_up
from tests.support.stores import PEPPER

ROOT = Path(__file__).resolve().parents[2]


def test_a_kill_between_the_answer_and_its_settlement_leaves_the_hold_to_the_reconciler(
    postgres_url: str, tmp_path: Path
) -> None:
    # The JSON answer waits 0.3 s upstream and the stream takes about as long: both holds are
    # written before the first settlement is held back (a held batch stops the writer).
    with run_fake_upstream(slow_seconds=0.3, chunk_delay=0.05) as upstream:
        catalogue = write_catalogue(tmp_path / "lowrouter.toml", upstream.base_url)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("LOWROUTER_")},
            **fake_environ(),
            "LOWROUTER_DATABASE_URL": postgres_url,
            "LOWROUTER_TOKEN_PEPPER": PEPPER,
            "LOWROUTER_DATA_DIR": str(tmp_path),
            "LOWROUTER_CONFIG": str(catalogue),
            "LOWROUTER_ACCESS_LOG": "false",
            "LOWROUTER_PROCESS_LEASE_SECONDS": "1",
            "LOWROUTER_SETTLE_AFTER_ANSWER": "true",  # an opt-in: off by default
            # Answers within half of it settle after the answer (3 s: room for a busy machine).
            "LOWROUTER_HOLD_TIMEOUT_SECONDS": "6",
        }
        runtime = open_runtime(load_settings(env, database_url=postgres_url))
        opened = runtime.app.open_account("after", OPERATOR, credits=10**9)
        token = runtime.app.create_key(opened.account.id, "k", Scope(), OPERATOR).token.value
        port, marker = free_port(), tmp_path / "held"
        seam = [sys.executable, "-m", "tests.support.held_settlements", "120", str(marker)]
        serve = subprocess.Popen([*seam, "serve", "--port", str(port)], env=env, cwd=ROOT)
        try:
            wait_until_up(port)
            gateway = Gateway(f"http://127.0.0.1:{port}", runtime, token, opened.account.id)

            def call(model: str, stream: bool) -> None:
                with httpx.Client(timeout=30) as client:
                    assert gateway.call(client, model, stream=stream) == 200

            calls = [
                threading.Thread(target=call, args=("fake/slow", False)),
                threading.Thread(target=call, args=("fake/ok", True)),
            ]
            for thread in calls:
                thread.start()
            for thread in calls:
                thread.join(30)
            assert len(gateway.told) == 2 and all(gateway.told.values()), gateway.told
            assert marker.exists(), "no settlement reached the writer"
            books = replay(runtime)
            for request_id in gateway.told:  # answered, held durably, not settled
                assert request_id in books.reserved and request_id not in books.settled

            serve.send_signal(signal.SIGKILL)  # the worker: `serve --workers 1` runs it
            serve.wait(10)
            deadline = time.monotonic() + 60
            while not all(r in books.settled for r in gateway.told):
                assert time.monotonic() < deadline, "the reconciler left the holds open"
                time.sleep(0.5)
                runtime.reconcile()  # once the lease (1 s) and the hold timeout (6 s) are past
                books = replay(runtime)
        finally:
            if serve.poll() is None:
                serve.kill()
            serve.wait()
        try:
            books = check_books(runtime, {})  # every hold closed, balances, the chain
            for request_id, told in gateway.told.items():
                (settlement,) = books.settled[request_id]
                assert settlement.status == "unsettled"
                assert settlement.cost == settlement.held > told  # told its cost, charged the hold
        finally:
            runtime.close()
