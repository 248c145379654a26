"""Shared fixtures: every application test runs on SQLite and on PostgreSQL.

PostgreSQL tests get a fresh database each (created from the server at 127.0.0.1:5432 and dropped
afterwards). Under CI=true a missing PostgreSQL fails the test instead of skipping it.
"""

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import settings as hypothesis_settings

if TYPE_CHECKING:
    from infrastructure.runtime import Runtime

from tests.hosts.pgbouncer import pgbouncers  # noqa: F401  (fixture: PgBouncer per pool mode)
from tests.support.management_api import api  # noqa: F401  (fixture: the management API)
from tests.support.runs import FAST_GUARD
from tests.support.stores import (
    PEPPER,
    database_url_named,
    pg_admin_conninfo,
    require_postgres,
)

# No Hypothesis deadline: on a shared 2-core machine an example's time is noise, not a finding
# (speed is measured by `make bench`, never by timed tests).
hypothesis_settings.register_profile("lowrouter", deadline=None)
hypothesis_settings.load_profile("lowrouter")


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A database with lowrouter's schema, copied for each test (creating the schema anew
    for every test costs about half a second)."""
    import psycopg

    from infrastructure.runtime import open_runtime
    from infrastructure.settings import load_settings

    require_postgres()
    name = f"lrt_template_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    runtime = open_runtime(
        load_settings({"LOWROUTER_TOKEN_PEPPER": PEPPER}, database_url=database_url_named(name))
    )
    runtime.close()
    yield name
    with psycopg.connect(pg_admin_conninfo(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url(postgres_template: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one test: lowrouter's schema, no data."""
    import psycopg

    name = f"lrt_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg_admin_conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{postgres_template}"')
    yield database_url_named(name)
    with psycopg.connect(pg_admin_conninfo(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file with lowrouter's schema, copied for each test (as PostgreSQL's template)."""
    from infrastructure.runtime import open_runtime
    from infrastructure.settings import load_settings

    directory = tmp_path_factory.mktemp("sqlite-template")
    path = directory / "lowrouter.db"
    env = {"LOWROUTER_TOKEN_PEPPER": PEPPER, "LOWROUTER_DATA_DIR": str(directory)}
    open_runtime(load_settings(env, database_url=f"sqlite:///{path}")).close()
    assert not path.with_name(path.name + "-wal").exists()  # closed: everything is in the file
    return path


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: "os.PathLike[str]") -> str:
    """A fresh SQLite database for one test: lowrouter's schema, no data."""
    shutil.copyfile(sqlite_template, Path(tmp_path) / "lowrouter.db")
    return f"sqlite:///{tmp_path}/lowrouter.db"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Parametrises a test over both stores."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def settings(database_url: str, tmp_path: "os.PathLike[str]"):  # type: ignore[no-untyped-def]
    from infrastructure.settings import load_settings

    return load_settings(
        {"LOWROUTER_TOKEN_PEPPER": PEPPER, "LOWROUTER_DATA_DIR": str(tmp_path)},
        database_url=database_url,
    )


@pytest.fixture
def ledger(settings):  # type: ignore[no-untyped-def]
    """The application on the parametrised store."""
    from infrastructure.persistence import build_app

    app = build_app(settings)
    yield app
    app.close()


@pytest.fixture(params=["direct", "transaction"])
def route(request: pytest.FixtureRequest) -> str:
    """How two_gateways' processes reach PostgreSQL: directly, or through PgBouncer in that pool
    mode ("session" too where a test parametrises it: it keeps session state, the easy one)."""
    return str(request.param)


@pytest.fixture
def database_route(
    route: str, postgres_url: str, request: pytest.FixtureRequest
) -> tuple[str, dict[str, str]]:
    """The database URL the processes use for `route`, and the settings that go with it."""
    if route == "direct":
        return postgres_url, {}
    bouncers = request.getfixturevalue("pgbouncers")  # started on first use (tests/hosts)
    extra = {"LOWROUTER_DATABASE_POOLER": route}
    if route == "transaction":  # LISTEN on a direct connection, everything else through it
        extra["LOWROUTER_DIRECT_DATABASE_URL"] = postgres_url
    return bouncers[route].url_for(postgres_url), extra


@pytest.fixture
def two_gateways(
    database_route: tuple[str, dict[str, str]], tmp_path: Path
) -> Iterator[tuple["Runtime", list[str]]]:
    """Two gateway processes on one fresh PostgreSQL database, and this process's runtime on it
    (directly or through PgBouncer: `route`)."""
    from infrastructure.runtime import open_runtime
    from infrastructure.settings import load_settings
    from tests.support.processes import (
        free_port,
        gateway_environment,
        start_gateway,
        stop,
        wait_until_up,
    )

    database_url, extra = database_route
    settings = load_settings(
        {"LOWROUTER_TOKEN_PEPPER": PEPPER, "LOWROUTER_DATA_DIR": str(tmp_path), **extra},
        database_url=database_url,
    )
    runtime = open_runtime(settings)
    ports = [free_port(), free_port()]
    # these tests send revoked tokens by design (dozens of 401s from one address): no ban
    gateway_extra = {"LOWROUTER_AUTH_FAILURE_BURST": "100000", **extra}
    env = gateway_environment(database_url, tmp_path, **gateway_extra)
    processes = [start_gateway(env, port) for port in ports]
    try:
        for port, process in zip(ports, processes, strict=True):
            wait_until_up(port, process)
        yield runtime, [f"http://127.0.0.1:{port}/api/v1" for port in ports]
    finally:
        for process in processes:
            stop(process)
        runtime.close()


# --- markers: the pyramid's layers, applied by what a test uses ---------------------------------
#
# `postgres`: runs on PostgreSQL (a postgres_url fixture, or the "postgres" side of a store
#     parametrisation). `e2e`: starts a server or a subprocess (everything under tests/e2e, and
#     the fixtures, modules and tests below). `slow`: takes seconds on its own (SLOW_TESTS).
# `make test-fast` runs `-m "not slow and not e2e and not postgres"` with FAST_GUARD set: there a
# test that starts a server or a subprocess fails, naming the marker it lacks, so a new test
# cannot slip into the fast set by mistake. Add a test's fixture or module here rather than
# marking it by hand.

E2E_DIRECTORIES = ("e2e", "faults")
E2E_FIXTURES = {  # fixtures that start a server or a subprocess when the test runs
    "gateway",  # tests/e2e, tests/audit/test_investigate.py: a live gateway
    "start_gateway",
    "upstream",  # the fake upstream: an HTTP server
    "served",  # tests/http/test_usage_api.py: uvicorn
    "two_gateways",  # two gateway processes on one PostgreSQL
    "pgbouncers",  # PgBouncer instances (tests/hosts/pgbouncer.py)
    "live",  # the dashboard's browser test
    "receiver",  # tests/webhooks: a webhook receiver on loopback
    "pair",  # tests/policy: two gateway processes on one PostgreSQL
}
E2E_DIRECT_FIXTURES = {"executable"}  # the real `lowrouter` script in a subprocess (tests/cli)
E2E_MODULES = {  # modules whose tests start processes themselves
    "tests/audit/test_investigate.py",
    "tests/cli/test_serve.py",
    "tests/spend/test_crash.py",
    "tests/spend/test_crash_mid_commit.py",
    "tests/spend/test_settle_after_answer.py",
    "tests/spend/test_two_gateways.py",
    "tests/infrastructure/test_fake_upstream.py",
    "tests/infrastructure/test_upstream_client.py",
    "tests/security/test_unauthenticated_surface.py",
    "tests/security/test_management_keys.py",
    "tests/security/test_poison.py",
    "tests/security/test_holds.py",  # uvicorn in a thread: a hostile upstream, the gateway
    "tests/security/test_header_limits.py",  # uvicorn in a thread: the real protocol
    "tests/security/test_no_secret_relayed.py",
    "tests/hosts/test_many_hosts.py",
    "tests/hosts/test_connection_budget.py",
    "tests/hosts/test_vanished_host.py",
    "tests/observability/test_serve_observed.py",
    "tests/observability/test_readiness.py",
    "tests/observability/test_traces.py",
    "tests/cli/test_scan.py",  # git
    "tests/webhooks/test_secret_scanning.py",  # gateway processes
    "tests/webhooks/test_webhooks_api.py",
    "tests/webhooks/test_delivery.py",  # test-local receivers
    "tests/webhooks/test_budget_concurrency.py",
    "tests/http/test_first_request.py",  # a fresh interpreter
}
E2E_TESTS = {  # single tests that start a subprocess: `--env-file` asks git if the file is ignored
    "tests/cli/test_cli.py::test_env_file_gets_the_token_with_mode_0600_and_is_appended_to",
    "tests/cli/test_cli.py::test_env_file_in_a_git_work_tree_warns_unless_it_is_ignored",
    "tests/cli/test_no_plaintext.py::test_tokens_created_through_the_cli_are_not_stored_in_plaintext",
    "tests/security/test_cli_hygiene.py::test_env_file_refuses_symlinks_and_loose_files_unless_forced",
}
# The in-memory state machines are not here: `make test-fast` runs them with a tenth of their
# examples (tests/support/runs.py), `make test` in full.
SLOW_TESTS = {  # seconds each on 2 busy cores (`pytest --durations`): state machines, bulk
    "tests/domain/test_key_lifecycle.py::test_key_lifecycle_state_machine_on_a_real_store",
    "tests/domain/test_tokens.py::test_one_hundred_thousand_generated_tokens_never_collide",
    "tests/spend/test_ledger_machine.py::test_ledger_machine_replays_hot_pages_from_snapshot_and_tail",
    "tests/spend/test_ledger_machine.py::test_ledger_machine_replayed_from_the_database",
    "tests/projections/test_rebuild.py::test_rebuild_equals_incremental_on_sqlite",
    "tests/audit/test_unexpected_usage.py::test_flags_follow_the_rules_and_rebuild_equals_incremental",
    "tests/audit/test_replay.py::test_replay_at_any_moment_equals_the_live_state_then",
    "tests/hosts/test_many_hosts.py::test_many_hosts_keep_every_promise",
    "tests/hosts/test_connection_budget.py::test_a_worker_holds_at_most_three_idle_and_its_pool_size_under_load",
    "tests/hosts/test_vanished_host.py::test_a_lock_held_by_a_host_that_vanished_mid_statement_is_freed",
    "tests/observability/test_serve_observed.py::test_metrics_and_json_logs_of_two_workers_after_a_known_mix",
    "tests/dashboard/browser/test_layout.py::test_every_page_fits_a_laptop_and_a_phone_and_passes_axe",
    "tests/policy/test_lookup_agrees.py::test_the_lookup_record_and_the_aggregate_always_agree",
    "tests/policy/test_limits_across_processes.py::test_a_limit_admits_exactly_its_allowance_across_two_processes",
    "tests/cli/test_key_policy_cli.py::test_policy_options_set_clear_and_show_in_the_audit",
    "tests/cli/test_key_policy_cli.py::test_bad_policy_options_and_unserved_models_change_nothing",
    "tests/faults/test_postgres_restart.py::test_a_postgresql_restart_under_load_leaves_honest_books",
}
# `make test` runs two xdist workers (`-n 2 --dist loadgroup`); each has its own session
# fixtures (templates, PgBouncers, e2e gateways). A test that uses a server shared by several
# tests, or that runs many processes against PostgreSQL, joins a group: one group, one worker,
# so the server starts once and the process-heavy tests never run beside each other.
XDIST_GROUP_FIXTURES = {  # the first that a test uses names its group
    "two_gateways": "processes",
    "pgbouncers": "processes",  # session-scoped PgBouncers
    "pair": "processes",  # module-scoped: two gateway processes (tests/policy)
    "live": "browser",  # package-scoped: the dashboard's browser
}
XDIST_GROUP_DIRECTORIES = {  # the rest of a directory's tests
    "tests/hosts/": "processes",  # network namespaces, several gateway processes each
    "tests/e2e/": "e2e",  # session-scoped gateways and fake upstream (tests/e2e/conftest.py)
}
POSTGRES_FIXTURES = {"postgres_url", "postgres_template"}
STORE_PARAMETERS = ("database_url", "store")


def _module(item: pytest.Item) -> str:
    return item.path.relative_to(Path(__file__).parent.parent).as_posix()


def _test_name(item: pytest.Item) -> str:
    """`module::function`, without the parameters."""
    return f"{_module(item)}::{getattr(item, 'originalname', item.name)}"


def _on_postgres(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    params = callspec.params if callspec is not None else {}
    fixtures = set(getattr(item, "fixturenames", ()))
    return bool(fixtures & POSTGRES_FIXTURES) or any(
        params.get(name) == "postgres" for name in STORE_PARAMETERS
    )


def _is_e2e(item: pytest.Item) -> bool:
    module = _module(item)
    fixtures = set(getattr(item, "fixturenames", ()))
    info = getattr(item, "_fixtureinfo", None)
    direct = set(info.argnames) if info is not None else set()
    return (
        module.split("/")[1] in E2E_DIRECTORIES
        or module in E2E_MODULES
        or bool(fixtures & E2E_FIXTURES)
        or bool(direct & E2E_DIRECT_FIXTURES)
        or _test_name(item) in E2E_TESTS
    )


def _xdist_group(item: pytest.Item) -> str | None:
    fixtures = getattr(item, "fixturenames", ())
    for fixture, group in XDIST_GROUP_FIXTURES.items():
        if fixture in fixtures:
            return group
    module = _module(item)
    return next((g for d, g in XDIST_GROUP_DIRECTORIES.items() if module.startswith(d)), None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        group = _xdist_group(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
        if _on_postgres(item):
            item.add_marker(pytest.mark.postgres)
        if _is_e2e(item):
            item.add_marker(pytest.mark.e2e)
        if _test_name(item) in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _fast_guard(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under `make test-fast`, starting a server or a subprocess fails the test (see above)."""
    if os.environ.get(FAST_GUARD) != "1" or request.node.get_closest_marker("e2e"):
        return
    import socket
    import subprocess

    def refuse(what: str) -> Callable[..., Any]:
        def refused(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError(
                f"{request.node.nodeid} {what} but is not marked e2e: add its fixture or module "
                "to E2E_FIXTURES / E2E_MODULES in tests/conftest.py"
            )

        return refused

    import uvicorn

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse("starts a subprocess"))
    monkeypatch.setattr(socket.socket, "listen", refuse("starts a server"))
    # uvicorn listens through uvloop, which never calls socket.socket.listen
    monkeypatch.setattr(uvicorn.Server, "__init__", refuse("starts a server"))
