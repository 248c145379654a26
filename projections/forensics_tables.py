"""The forensics read models' tables (written by projections.forensics, read by
projections.queries.forensics)."""

from sqlalchemy import BigInteger, Column, String, Table

from projections.schema import metadata

ADDRESS_LENGTH = 64
AGENT_LENGTH = 300

key_clients = Table(
    "lr_key_clients",
    metadata,
    Column("key_id", String(36), primary_key=True),
    Column("client_ip", String(ADDRESS_LENGTH), primary_key=True),  # "" = unknown
    Column("user_agent", String(AGENT_LENGTH), primary_key=True),  # "" = unknown
    Column("first_seen_us", BigInteger, nullable=False),
    Column("last_seen_us", BigInteger, nullable=False),
    Column("requests", BigInteger, nullable=False),
    Column("cost", BigInteger, nullable=False),
)

key_days = Table(
    "lr_key_days",
    metadata,
    Column("key_id", String(36), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("cost", BigInteger, nullable=False),
)

key_flags = Table(
    "lr_key_flags",
    metadata,
    Column("key_id", String(36), primary_key=True),
    Column("kind", String(32), primary_key=True),  # new_address | new_user_agent | spend_spike
    Column("subject", String(AGENT_LENGTH), primary_key=True),  # the address, agent or day
    Column("position", BigInteger, nullable=False),  # the Settled event that raised it
    Column("at_us", BigInteger, nullable=False),
    Column("client_ip", String(ADDRESS_LENGTH)),
    Column("user_agent", String(AGENT_LENGTH)),
    Column("amount", BigInteger),  # spend_spike: the day's spend when it went over
    Column("baseline", BigInteger),  # spend_spike: the trailing daily average
)

flag_acknowledgements = Table(
    "lr_flag_acknowledgements",
    metadata,
    Column("key_id", String(36), primary_key=True),
    Column("kind", String(32), primary_key=True),
    Column("subject", String(AGENT_LENGTH), primary_key=True),
    Column("at_us", BigInteger, nullable=False),
    Column("actor", String(300), nullable=False),  # who, for people: "session of lr-mk-…"
)
