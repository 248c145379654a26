"""All configuration, read from the environment once, in one place."""

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

DEFAULT_DATABASE_URL = "sqlite:///lowrouter.db"
MiB = 1024 * 1024
BACKGROUND_CHOICES = ("inline", "external")
# What sits between lowrouter and PostgreSQL: nothing, or a pooler (PgBouncer) in session or
# transaction mode (then no session state and no server-side prepared statements through it).
POOLER_CHOICES = ("none", "session", "transaction")
LOG_FORMAT_CHOICES = ("text", "json")
SWITCH_CHOICES = ("true", "false")
LEAK_POLICIES = ("revoke", "notify")


def is_postgres_url(url: str) -> bool:
    """Whether a database URL names PostgreSQL (the one rule; anything else is SQLite's)."""
    return url.startswith(("postgresql://", "postgres://"))


class SettingsError(ValueError):
    """A configuration problem, reported as one line naming what to fix."""


@dataclass(frozen=True)
class Settings:
    database_url: str
    pepper: bytes
    data_dir: Path
    config_path: Path | None = None
    max_body_bytes: int = MiB
    hold_timeout_seconds: float = 600.0
    upstream_timeout_seconds: float = 120.0  # each read of the upstream's answer
    upstream_idle_seconds: float = 300.0  # between two events of a stream (comments don't count)
    max_request_seconds: float = 900.0  # a request's whole upstream leg, first byte to last
    store_wait_seconds: float = 2.0  # a request waits this long for the store, then gets a 503
    # Answer before the settlement is durable (it is queued first; the hold is durable): one
    # commit less in every request's latency. README, "Settling after the answer".
    settle_after_answer: bool = False
    process_lease_seconds: float = 30.0  # a gateway counts as gone this long after its last renewal
    # The background work's lease (infrastructure.leadership): a standby takes over at most this
    # long after the holder's last renewal, plus its own retry interval (0.15 s).
    leadership_lease_seconds: float = 0.6
    body_timeout_seconds: float = 30.0  # a request body must arrive within this (slow drip)
    # Failed authentications per client address before a short ban (domain.throttle; 0: off).
    auth_failure_burst: int = 20
    auth_ban_seconds: float = 60.0
    max_keys_per_account: int = 1000  # live inference keys an account may have (0: no cap)
    # A request's line and headers: at most this many bytes, all within this many seconds.
    max_header_bytes: int = 64 * 1024
    header_timeout_seconds: float = 10.0
    # Where the projections, the reconciler and the chain run: "inline" in each app's own threads,
    # or "external" in a process of their own (`lowrouter serve` starts one for its workers).
    background: str = "inline"
    # PostgreSQL connections a process may hold (its one shared pool; see infrastructure.database).
    db_pool_size: int = 4
    database_pooler: str = "none"
    # A connection straight to PostgreSQL, for LISTEN/NOTIFY when the main URL is a
    # transaction-mode pooler. None: the main URL (or, behind such a pooler, polling).
    direct_database_url: str | None = None
    application_name: str | None = None  # None: "lowrouter-<role>" (gateway, background, cli)
    reconcile_interval_seconds: float = 30.0
    # Webhooks and leaked keys (README, "Webhooks" and "When a key leaks").
    webhooks_allow_private: bool = False
    webhooks_timeout_seconds: float = 5.0
    webhooks_retry_schedule: tuple[float, ...] | None = None  # None: domain.webhooks' schedule
    leak_policy: str = "revoke"
    github_scanning_keys: Path | None = None
    # Peers whose X-Forwarded-For is believed (LOWROUTER_TRUSTED_PROXIES, comma-separated CIDRs).
    trusted_proxies: tuple[str, ...] = ()
    # Observability (infrastructure/observability): log format, the per-request log line, the
    # Prometheus metrics (and the bearer token guarding /metrics), the OTLP/HTTP traces endpoint.
    log_format: str = "text"
    access_log: bool = True
    metrics: bool = True
    metrics_token: str | None = None
    otlp_traces_endpoint: str | None = None

    @property
    def is_postgres(self) -> bool:
        return is_postgres_url(self.database_url)

    @property
    def answer_first_within(self) -> float | None:
        """How long after its start a call may be answered before its settlement is durable:
        half the hold timeout, so the settlement always finds its hold open (the reconciler
        never closes a younger hold of a live process). None: every answer waits."""
        return self.hold_timeout_seconds / 2 if self.settle_after_answer else None

    @property
    def listen_url(self) -> str | None:
        """Where LISTEN/NOTIFY works: the direct URL, else the main one unless it is a
        transaction-mode pooler (which cannot keep a LISTEN: the runner polls instead)."""
        if self.direct_database_url:
            return self.direct_database_url
        return self.database_url if self.database_pooler != "transaction" else None


def load_settings(
    environ: Mapping[str, str] | None = None, database_url: str | None = None
) -> Settings:
    env = os.environ if environ is None else environ
    url = database_url or env.get("LOWROUTER_DATABASE_URL") or DEFAULT_DATABASE_URL
    check_database_url(url)
    data_dir = Path(env.get("LOWROUTER_DATA_DIR") or _default_data_dir(url)).expanduser()
    pepper_text = env.get("LOWROUTER_TOKEN_PEPPER")
    pepper = pepper_text.encode() if pepper_text else _pepper_from_file(data_dir)
    config = env.get("LOWROUTER_CONFIG")
    if _int(env, "LOWROUTER_DB_POOL_SIZE", 4) < 2:
        # The ledger writer holds its page lock on one connection while it saves on another.
        raise SettingsError("LOWROUTER_DB_POOL_SIZE must be at least 2")
    return Settings(
        database_url=url,
        pepper=pepper,
        data_dir=data_dir,
        config_path=Path(config) if config else None,
        max_body_bytes=_int(env, "LOWROUTER_MAX_BODY_BYTES", MiB),
        hold_timeout_seconds=_seconds(env, "LOWROUTER_HOLD_TIMEOUT_SECONDS", 600),
        upstream_timeout_seconds=_seconds(env, "LOWROUTER_UPSTREAM_TIMEOUT_SECONDS", 120),
        upstream_idle_seconds=_seconds(env, "LOWROUTER_UPSTREAM_IDLE_SECONDS", 300),
        max_request_seconds=_seconds(env, "LOWROUTER_MAX_REQUEST_SECONDS", 900),
        process_lease_seconds=_seconds(env, "LOWROUTER_PROCESS_LEASE_SECONDS", 30),
        leadership_lease_seconds=_seconds(
            env, "LOWROUTER_LEADERSHIP_LEASE_SECONDS", 0.6, at_least=MIN_LEADERSHIP_LEASE_SECONDS
        ),
        store_wait_seconds=_seconds(env, "LOWROUTER_STORE_WAIT_SECONDS", 2),
        settle_after_answer=_choice(env, "LOWROUTER_SETTLE_AFTER_ANSWER", ("false", "true"))
        == "true",
        body_timeout_seconds=float(_int(env, "LOWROUTER_BODY_TIMEOUT_SECONDS", 30)),
        auth_failure_burst=_int(env, "LOWROUTER_AUTH_FAILURE_BURST", 20),
        auth_ban_seconds=float(_int(env, "LOWROUTER_AUTH_BAN_SECONDS", 60)),
        max_keys_per_account=_int(env, "LOWROUTER_MAX_KEYS_PER_ACCOUNT", 1000),
        max_header_bytes=_int(env, "LOWROUTER_MAX_HEADER_BYTES", 64 * 1024),
        header_timeout_seconds=float(_int(env, "LOWROUTER_HEADER_TIMEOUT_SECONDS", 10)),
        background=_choice(env, "LOWROUTER_BACKGROUND", BACKGROUND_CHOICES),
        db_pool_size=_int(env, "LOWROUTER_DB_POOL_SIZE", 4),
        database_pooler=_choice(env, "LOWROUTER_DATABASE_POOLER", POOLER_CHOICES),
        direct_database_url=_direct_url(env),
        application_name=env.get("LOWROUTER_APPLICATION_NAME") or None,
        reconcile_interval_seconds=float(_int(env, "LOWROUTER_RECONCILE_INTERVAL_SECONDS", 30)),
        webhooks_allow_private=_flag(env, "LOWROUTER_WEBHOOKS_ALLOW_PRIVATE"),
        webhooks_timeout_seconds=float(_int(env, "LOWROUTER_WEBHOOKS_TIMEOUT_SECONDS", 5)),
        webhooks_retry_schedule=_seconds_list(env, "LOWROUTER_WEBHOOKS_RETRY_SCHEDULE"),
        leak_policy=_choice(env, "LOWROUTER_LEAK_POLICY", LEAK_POLICIES),
        github_scanning_keys=_path(env, "LOWROUTER_GITHUB_SCANNING_KEYS"),
        trusted_proxies=_networks(env, "LOWROUTER_TRUSTED_PROXIES"),
        log_format=_choice(env, "LOWROUTER_LOG_FORMAT", LOG_FORMAT_CHOICES),
        access_log=_choice(env, "LOWROUTER_ACCESS_LOG", SWITCH_CHOICES) == "true",
        metrics=_choice(env, "LOWROUTER_METRICS", SWITCH_CHOICES) == "true",
        metrics_token=env.get("LOWROUTER_METRICS_TOKEN") or None,
        otlp_traces_endpoint=otlp_traces_endpoint(env),
    )


def _direct_url(env: Mapping[str, str]) -> str | None:
    url = env.get("LOWROUTER_DIRECT_DATABASE_URL") or None
    if url is not None and not is_postgres_url(url):
        raise SettingsError(
            f"LOWROUTER_DIRECT_DATABASE_URL {url!r} is not postgresql://USER@HOST:PORT/DB"
        )
    return url


def otlp_traces_endpoint(env: Mapping[str, str]) -> str | None:
    """Where OTLP/HTTP traces go, by OpenTelemetry's variables; None: no tracing at all."""
    traces = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if traces:
        return traces
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return base.rstrip("/") + "/v1/traces" if base else None


def check_database_url(url: str) -> None:
    if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        return
    parts = urlsplit(url)
    if parts.scheme in ("postgresql", "postgres") and parts.path.strip("/"):
        postgres_conninfo(url)  # refuses a keepalive parameter that is not a whole number
        return
    raise SettingsError(
        f"LOWROUTER_DATABASE_URL {masked_url(url)!r} is not sqlite:///PATH or "
        "postgresql://USER@HOST:PORT/DB"
    )


_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]*@", re.IGNORECASE)
_CONNINFO_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)


def masked_url(url: str) -> str:
    """A database URL as it may be printed: the password, if any, as ***."""
    return mask_passwords(url)


def mask_passwords(text: str) -> str:
    """Any text (an error, a log line) with URL and libpq passwords replaced by ***."""
    return _CONNINFO_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))


def sqlite_path(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


def postgres_parts(url: str) -> dict[str, str]:
    parts = urlsplit(url)
    return {
        "dbname": parts.path.strip("/"),
        "host": parts.hostname or "127.0.0.1",
        "port": str(parts.port or 5432),
        "user": unquote(parts.username or "postgres"),
        "password": unquote(parts.password or ""),
    }


# The leadership lease is renewed every quarter of it, by one statement each time: a lease much
# shorter than a round trip would renew in a busy loop (1e-9 s spun), and lose the lease anyway.
MIN_LEADERSHIP_LEASE_SECONDS = 0.2

# libpq's client-side TCP keepalives (and the bound on unacknowledged writes, milliseconds):
# a PostgreSQL or PgBouncer host that vanished is found dead in about 8-10 s instead of the
# kernel's minutes, so the one ledger-writer thread waiting on it gets its error and retries.
# A URL's own query parameters of these names win.
CLIENT_KEEPALIVES = {
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "1",
    "keepalives_count": "3",
    "tcp_user_timeout": "10000",
}


def postgres_conninfo(url: str) -> str:
    """A libpq connection string for psycopg, from a postgresql:// URL, with CLIENT_KEEPALIVES
    (a whole-number query parameter of the same name in the URL replaces the default)."""
    pg = postgres_parts(url)
    conninfo = f"host={pg['host']} port={pg['port']} user={pg['user']} dbname={pg['dbname']}"
    if pg["password"]:
        conninfo += f" password={pg['password']}"
    given = dict(parse_qsl(urlsplit(url).query))
    for name, default in CLIENT_KEEPALIVES.items():
        value = given.get(name, default)
        if not value.isdigit():
            raise SettingsError(f"LOWROUTER_DATABASE_URL's {name}={value!r} is not a whole number")
        conninfo += f" {name}={value}"
    return conninfo


def _default_data_dir(url: str) -> Path:
    if url.startswith("sqlite:///"):
        return sqlite_path(url).expanduser().resolve().parent
    return Path("~/.local/share/lowrouter")


def _pepper_from_file(data_dir: Path) -> bytes:
    """A server secret generated once and kept beside the data, readable by its owner only."""
    path = data_dir / "token_pepper"
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its secret
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as file:
        file.write(value)
    return value


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number") from None
    if value <= 0:
        raise SettingsError(f"{name} must be positive")
    return value


def _seconds(
    env: Mapping[str, str], name: str, default: float, at_least: float | None = None
) -> float:
    """A positive number of seconds (fractions allowed, for tests and tuning), `at_least`
    this many if given."""
    raw = env.get(name)
    if raw is None or raw == "":
        return float(default)
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise SettingsError(f"{name} must be a positive number of seconds")
    if at_least is not None and value < at_least:
        raise SettingsError(f"{name}={raw!r} is too short: it must be at least {at_least} s")
    return value


def _networks(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Comma-separated CIDRs (or addresses), checked here so a typo fails at start."""
    import ipaddress

    found = []
    for part in (env.get(name) or "").split(","):
        if not part.strip():
            continue
        try:
            found.append(str(ipaddress.ip_network(part.strip(), strict=False)))
        except ValueError:
            raise SettingsError(f"{name}: {part.strip()[:60]!r} is not a CIDR or address") from None
    return tuple(found)


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """One of `choices`; the first when unset."""
    raw = env.get(name) or choices[0]
    if raw not in choices:
        raise SettingsError(f"{name}={raw!r} is not one of: {', '.join(choices)}")
    return raw


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or "false").strip().lower()
    if raw not in ("true", "false", "1", "0", "yes", "no"):
        raise SettingsError(f"{name}={raw!r} is not true or false")
    return raw in ("true", "1", "yes")


def _seconds_list(env: Mapping[str, str], name: str) -> tuple[float, ...] | None:
    """Comma-separated seconds, e.g. "5,300,1800"; unset: None."""
    raw = env.get(name)
    if not raw:
        return None
    try:
        values = tuple(float(part) for part in raw.split(","))
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a comma-separated list of seconds") from None
    if not values or any(value < 0 for value in values) or len(values) > 20:
        raise SettingsError(f"{name} must list 1 to 20 waits of zero or more seconds")
    return values


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name)
    return Path(raw).expanduser() if raw else None
