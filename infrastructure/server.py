"""`lowrouter serve`: the gateway under uvicorn, one or more worker processes."""

import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette

from infrastructure.background import start_background_process
from infrastructure.catalogue import Catalogue, ConfigError, demo_catalogue, load_catalogue
from infrastructure.http.app import create_app
from infrastructure.http.protocol import BoundedHttpToolsProtocol
from infrastructure.observability.logs import configure_logging, logging_config
from infrastructure.observability.metrics import MULTIPROC_ENV, use_multiprocess_dir
from infrastructure.runtime import open_runtime
from infrastructure.settings import Settings, load_settings, masked_url


def load_catalogue_for(settings: Settings) -> Catalogue:
    """The configured catalogue; only with none, the demo (its upstream runs in-process)."""
    if settings.config_path is None:
        return demo_catalogue()
    return load_catalogue(settings.config_path, os.environ)


def app_factory() -> Starlette:
    """Build the app in a worker process, from the environment `serve` prepared."""
    settings = load_settings()
    catalogue = load_catalogue_for(settings)
    BoundedHttpToolsProtocol.header_timeout = settings.header_timeout_seconds
    return create_app(open_runtime(settings, prepare_schema=False, role="gateway"), catalogue)


log = logging.getLogger("lowrouter.serve")


def announcer(settings: Settings) -> Callable[..., None]:
    """Start-up lines: printed for a terminal, or JSON log lines under LOWROUTER_LOG_FORMAT=json."""
    if settings.log_format == "json":
        return lambda text, **_print: log.info(text, extra={"event": "startup"})
    return print


def metrics_directory(settings: Settings) -> str | None:
    """A fresh directory for prometheus-client's multiprocess files, shared by the workers and
    the background process, unless the operator chose one (PROMETHEUS_MULTIPROC_DIR). Returns
    the directory to remove at exit, if we made it."""
    if not settings.metrics:
        return None
    chosen = os.environ.get(MULTIPROC_ENV)
    made = None if chosen else tempfile.mkdtemp(prefix="lowrouter-metrics-")
    use_multiprocess_dir(chosen or str(made))
    return made


def proxy_options(settings: Settings) -> dict[str, Any]:
    """uvicorn believes X-Forwarded-For/-Proto only from LOWROUTER_TRUSTED_PROXIES (uvicorn's own
    default trusts 127.0.0.1, so anything on the host could claim any client address)."""
    trusted = list(settings.trusted_proxies)
    return {"proxy_headers": bool(trusted), "forwarded_allow_ips": trusted or None}


def serve(settings: Settings, host: str, port: int, workers: int = 1) -> int:
    configure_logging(settings.log_format)
    say = announcer(settings)
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    try:
        load_catalogue_for(settings)  # fail fast, with one line, before starting
    except ConfigError as error:
        if settings.log_format == "json":
            log.error("lowrouter: %s", error, extra={"event": "config_error"})
        else:
            print(f"lowrouter: {error}", file=sys.stderr)
        return 2
    made_metrics_dir = metrics_directory(settings)
    os.environ["LOWROUTER_DATABASE_URL"] = settings.database_url
    # Prepare the schema once, before workers race to create it.
    open_runtime(settings, role="serve").close()
    # Unless told otherwise, the projections, reconciler and chain get a process of their own.
    own_background = "LOWROUTER_BACKGROUND" not in os.environ
    if own_background:
        os.environ["LOWROUTER_BACKGROUND"] = "external"
    elif settings.background == "external":
        say(
            "lowrouter: LOWROUTER_BACKGROUND=external: run `lowrouter projections run` beside "
            "this gateway (projections, stale holds, tamper-evidence chain)",
            file=sys.stderr,
        )
    database = masked_url(settings.database_url)  # never the password
    say(f"lowrouter: gateway on http://{local}:{port}/api/v1 (database {database})")
    if settings.config_path is None:
        say("lowrouter: no LOWROUTER_CONFIG: serving the built-in DEMO model lowrouter/echo")
    say(
        "lowrouter: first key, in another terminal:\n"
        "  lowrouter accounts create acme --credits 10\n"
        "  lowrouter keys create --account acme --name local-dev\n"
        f"  dashboard: http://{local}:{port}/dashboard   API docs: http://{local}:{port}/docs"
    )
    background = start_background_process() if own_background else None
    try:
        uvicorn.run(
            "infrastructure.server:app_factory",
            factory=True,
            host=host,
            port=port,
            workers=workers if workers > 1 else None,
            log_level="warning",
            **proxy_options(settings),
            log_config=logging_config(settings.log_format),
            access_log=False,  # the observability middleware writes the one request line
            loop="auto",
            http=BoundedHttpToolsProtocol,  # header size and slow-header bounds
            h11_max_incomplete_event_size=settings.max_header_bytes,
            timeout_keep_alive=5,  # an idle keep-alive connection is closed after 5 s
        )
    finally:
        if background is not None:
            background.stop()
        if made_metrics_dir is not None:
            shutil.rmtree(made_metrics_dir, ignore_errors=True)
    return 0
