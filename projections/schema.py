"""Read-model tables (SQLAlchemy Core), in the same database as the events.

Times are stored as integer microseconds since the epoch (UTC): portable, sortable and exact on
both SQLite and PostgreSQL. Every table is a pure function of the event log: dropping and
rebuilding one gives the same rows.
"""

from datetime import UTC, datetime, timedelta
from typing import overload

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

# Each projection's tracking position: the last event (notification id) it has applied.
positions = Table(
    "lr_projection_positions",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
    Column("schema_version", Integer, nullable=False),
)

# A projection that failed on an event, so that every process sees it (gateway workers refuse to
# authenticate from a key lookup that stopped following the log). Cleared by a reset or rebuild.
projection_failures = Table(
    "lr_projection_failures",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("error", Text, nullable=False),
    Column("at_us", BigInteger, nullable=False),
)

# The active-key lookup: token hash -> key, account, scope, status. Inference (sk) and management
# (mk) keys both live here; the gateway authenticates from it with one indexed read.
keys = Table(
    "lr_keys",
    metadata,
    Column("key_id", String(36), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("kind", String(2), nullable=False),  # "sk" or "mk"
    Column("account_id", String(36), nullable=False, index=True),
    Column("name", Text, nullable=False),
    Column("prefix", String(16), nullable=False),
    Column("last4", String(4), nullable=False),
    Column("models", Text),  # JSON list, NULL = every model
    Column("region", String(32)),
    Column("daily_limit", BigInteger),  # micro-credits, NULL = none
    Column("status", String(16), nullable=False),  # active | rotating | revoked
    Column("grace_deadline_us", BigInteger),
    Column("created_us", BigInteger, nullable=False),
    Column("revoked_us", BigInteger),
    Column("predecessor_id", String(36)),
    Column("successor_id", String(36)),
    # The key policy (domain.policy), so the gateway judges expiry and networks from the lookup
    # and hands the limits to the ledger with no other read.
    Column("expires_us", BigInteger),
    Column("requests_per_minute", BigInteger),
    Column("tokens_per_minute", BigInteger),
    Column("max_concurrent", BigInteger),
    Column("allowed_ips", Text),  # JSON list of CIDRs, NULL = any address
    Column("monthly_limit", BigInteger),  # micro-credits, NULL = none
    # The rotation lineage: the id of the key it was first issued as (its limits' meter).
    Column("lineage_id", String(36)),
)
Index("lr_keys_display", keys.c.prefix, keys.c.last4)

accounts = Table(
    "lr_accounts",
    metadata,
    Column("account_id", String(36), primary_key=True),
    Column("name", Text, nullable=False),
    Column("opened_us", BigInteger, nullable=False),
)

# The usage history: one row per completion, keyed by the event's position in the log, which
# gives a stable order and a gap-free cursor.
usage = Table(
    "lr_usage",
    metadata,
    Column("position", BigInteger, primary_key=True),
    Column("request_id", String(64), nullable=False),
    Column("at_us", BigInteger, nullable=False),
    Column("day", String(10), nullable=False),  # the UTC day the request is charged to
    Column("account_id", String(36), nullable=False),
    Column("key_id", String(36), nullable=False),
    Column("key_name", Text, nullable=False),
    Column("model", Text, nullable=False),
    Column("provider", Text),
    Column("region", String(32)),
    # 64-bit: an event can hold any count the edge accepts (domain.bounds), so none can fail here.
    Column("prompt_tokens", BigInteger, nullable=False),
    Column("completion_tokens", BigInteger, nullable=False),
    Column("held", BigInteger, nullable=False),
    Column("cost", BigInteger, nullable=False),
    Column("status", String(32), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("latency_ms", BigInteger, nullable=False),
    Column("streamed", Boolean, nullable=False),
    Column("client_ip", String(64)),
    Column("user_agent", Text),
    Column("flags", Text, nullable=False),  # JSON list
    Column("api", String(32), nullable=False),  # "chat.completions", "messages", …
    Column("cached_prompt_tokens", BigInteger, nullable=False),
    Column("cache_write_tokens", BigInteger, nullable=False),
    Column("reasoning_tokens", BigInteger, nullable=False),
    Column("cost_source", String(16), nullable=False),  # "reported" | "estimated" | "none"
    Column("upstream_cost", Text),  # the upstream's own reported cost, a decimal string
    Column("unbilled", BigInteger, nullable=False),  # cost beyond the hold (over_hold), not charged
)
Index("lr_usage_account", usage.c.account_id, usage.c.position)
Index("lr_usage_key", usage.c.key_id, usage.c.position)

# Per key and UTC day: what was spent and how many completions.
daily_spend = Table(
    "lr_daily_spend",
    metadata,
    Column("key_id", String(36), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("account_id", String(36), nullable=False, index=True),
    Column("cost", BigInteger, nullable=False),
    Column("requests", BigInteger, nullable=False),
)

# Per key: first and last use (the KEY shape's last_used_at).
key_activity = Table(
    "lr_key_activity",
    metadata,
    Column("key_id", String(36), primary_key=True),
    Column("first_used_us", BigInteger, nullable=False),
    Column("last_used_us", BigInteger, nullable=False),
    Column("requests", BigInteger, nullable=False),
    Column("cost", BigInteger, nullable=False),
)

# Which account and day each ledger page belongs to (page ids are one-way hashes).
ledger_pages = Table(
    "lr_ledger_pages",
    metadata,
    Column("page_id", String(36), primary_key=True),
    Column("account_id", String(36), nullable=False),
    Column("day", String(10), nullable=False),
)

# Open holds, for the reconciler: a row per reservation not yet settled or released.
holds = Table(
    "lr_holds",
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("account_id", String(36), nullable=False),
    Column("key_id", String(36), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("reserved_us", BigInteger, nullable=False, index=True),
    Column("owner", String(200), nullable=True),  # the serving process's lease (None: unknown)
)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_us(moment: datetime) -> int:
    """Exact microseconds since the epoch (a naive time is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(microseconds=1)


@overload
def from_us(value: int) -> datetime: ...
@overload
def from_us(value: None) -> None: ...
def from_us(value: int | None) -> datetime | None:
    if value is None:
        return None
    return _EPOCH + timedelta(microseconds=value)
