"""The dashboard's session and used-form tables, and the store that reads and writes them (the
pages, in infrastructure/http/dashboard/, hold no SQL)."""

import hashlib
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    MetaData,
    String,
    Table,
    Text,
    delete,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from domain.actor import Actor
from domain.tokens import TokenKind
from projections.lookup import keys_by_id
from projections.schema import to_us

# --- the session tables --------------------------------------------------------------------------

# The dashboard's own tables, beside (not part of) the projections: sessions are not a function of
# the event log. Session ids and form ids are stored only as SHA-256 hashes.
session_metadata = MetaData()

sessions_table = Table(
    "lr_dashboard_sessions",
    session_metadata,
    Column("session_hash", String(64), primary_key=True),
    Column("account_id", String(36), nullable=False),
    Column("management_key_id", String(36), nullable=False),
    Column("management_key_display", Text, nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("expires_us", BigInteger, nullable=False, index=True),
    Column("ended_us", BigInteger),
)

used_forms_table = Table(
    "lr_dashboard_used_forms",
    session_metadata,
    Column("form_hash", String(64), primary_key=True),
    Column("session_hash", String(64), nullable=False),
    Column("used_us", BigInteger, nullable=False, index=True),
)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    """A signed-in browser: which account, through which management key."""

    session_id: str
    account_id: UUID
    management_key_id: UUID
    display: str  # the management key's `lr-mk-AbCd…wXyZ`
    csrf: str
    address: str | None

    @property
    def actor(self) -> Actor:
        return Actor("dashboard", f"session of {self.display}", self.address)


class SessionStore:
    """Sessions in the database, so every worker process sees sign-in and sign-out alike."""

    def __init__(self, engine: Engine, lifetime: timedelta) -> None:
        self.engine = engine
        self.lifetime = lifetime  # of a session, and of a used form's record
        self._ready = False
        self._lock = threading.Lock()

    def ensure_schema(self) -> None:
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            try:
                session_metadata.create_all(self.engine, checkfirst=True)
            except SQLAlchemyError:
                # Another process created them at the same moment; fine if they exist now.
                tables = inspect(self.engine).get_table_names()
                if not all(t in tables for t in session_metadata.tables):
                    raise
            self._ready = True

    def start(
        self, session_id: str, account_id: UUID, key_id: UUID, display: str, now: datetime
    ) -> None:
        now_us = to_us(now)
        with self.engine.begin() as conn:
            conn.execute(delete(sessions_table).where(sessions_table.c.expires_us < now_us))
            conn.execute(
                delete(used_forms_table).where(
                    used_forms_table.c.used_us < now_us - to_us_delta(self.lifetime)
                )
            )
            conn.execute(
                insert(sessions_table).values(
                    session_hash=_sha256(session_id),
                    account_id=str(account_id),
                    management_key_id=str(key_id),
                    management_key_display=display,
                    created_us=now_us,
                    expires_us=now_us + to_us_delta(self.lifetime),
                )
            )

    def find(self, session_id: str, account_id: str, key_id: str, now: datetime) -> str | None:
        """The management key's display if the session is live and its key still usable (by
        the access policy, from the key lookup: active, or rotated and in its grace)."""
        query = select(sessions_table.c.management_key_display).where(
            sessions_table.c.session_hash == _sha256(session_id),
            sessions_table.c.account_id == account_id,
            sessions_table.c.management_key_id == key_id,
            sessions_table.c.ended_us.is_(None),
            sessions_table.c.expires_us > to_us(now),
        )
        with self.engine.connect() as conn:
            display = conn.execute(query).scalar_one_or_none()
        if display is None:
            return None
        key = keys_by_id(self.engine, [key_id]).get(key_id)
        usable = (
            key is not None
            and key.kind is TokenKind.MANAGEMENT
            and str(key.account_id) == account_id
            and key.status_at(now) in ("active", "rotating")
        )
        return str(display) if usable else None

    def end(self, session_id: str, now: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(sessions_table)
                .where(sessions_table.c.session_hash == _sha256(session_id))
                .values(ended_us=to_us(now))
            )

    def use_form(self, session_id: str, form_id: str, now: datetime) -> bool:
        """Mark a one-time form as used; False if it already was (a resubmission)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(used_forms_table).values(
                        form_hash=_sha256(f"{session_id}:{form_id}"),
                        session_hash=_sha256(session_id),
                        used_us=to_us(now),
                    )
                )
        except IntegrityError:
            return False
        return True


def to_us_delta(delta: timedelta) -> int:
    return delta // timedelta(microseconds=1)
