"""Where the background work runs: LOWROUTER_BACKGROUND=inline (each app runs the projections,
reconciler and chain in its own threads) or external (another process does: `lowrouter serve`
starts one; tests/cli/test_serve.py covers that process)."""

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from starlette.testclient import TestClient

from infrastructure.catalogue import demo_catalogue
from infrastructure.http.app import create_app
from infrastructure.runtime import open_runtime
from infrastructure.settings import SettingsError, load_settings
from tests.support.stores import PEPPER

T = TypeVar("T")
BACKGROUND_THREADS = {"lowrouter-projections", "lowrouter-chain", "lowrouter-reconciler"}


def settings_for(tmp_path: Path, background: str | None):  # type: ignore[no-untyped-def]
    env = {"LOWROUTER_TOKEN_PEPPER": PEPPER, "LOWROUTER_DATA_DIR": str(tmp_path)}
    if background is not None:
        env["LOWROUTER_BACKGROUND"] = background
    return load_settings(env, database_url=f"sqlite:///{tmp_path}/lowrouter.db")


def background_threads_started_by(action: Callable[[], T]) -> tuple[T, set[str]]:
    """The background threads that appeared while `action` ran (other tests' threads are
    ignored: they were there before)."""
    before = set(threading.enumerate())
    result = action()
    started = {t.name for t in set(threading.enumerate()) - before if t.is_alive()}
    return result, started & BACKGROUND_THREADS


@pytest.mark.parametrize(
    ("background", "expected"),
    [(None, BACKGROUND_THREADS), ("inline", BACKGROUND_THREADS), ("external", set())],
)
def test_the_app_runs_the_background_work_only_when_inline(
    tmp_path: Path, background: str | None, expected: set[str]
) -> None:
    settings = settings_for(tmp_path, background)
    app = create_app(open_runtime(settings), demo_catalogue("http://127.0.0.1:9/demo/v1"))
    client, started = background_threads_started_by(TestClient(app).__enter__)
    try:
        assert client.get("/healthz").status_code == 200
        assert started == expected
        assert app.state.gateway.runtime.projections.alive == bool(expected)
    finally:
        client.__exit__(None, None, None)


def test_an_unknown_background_mode_is_refused_with_one_line(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="LOWROUTER_BACKGROUND='elsewhere' is not one of"):
        settings_for(tmp_path, "elsewhere")
