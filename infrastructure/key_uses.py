"""When each management key was last used: `last_used_at` of MGMT_KEY, kept cheaply.

Not an event per request (the log would grow with every read) and not a projection (reads make
no events): a small table of its own, written at most once a minute per key and process, off
the event loop. So `last_used_at` is exact to about a minute. Inference keys' last use comes
from the usage history (projections.queries.management.last_used).
"""

import logging
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Executor
from datetime import datetime
from uuid import UUID

from sqlalchemy import BigInteger, Column, Engine, String, Table, select, update
from sqlalchemy.exc import IntegrityError

from projections.schema import from_us, metadata, to_us

log = logging.getLogger("lowrouter.key_uses")
WRITE_EVERY = 60.0  # seconds between writes of one key's last use, per process

key_uses = Table(
    "lr_key_uses",
    metadata,
    Column("key_id", String(36), primary_key=True),
    Column("last_used_us", BigInteger, nullable=False),
)


def create_key_uses_table(engine: Engine) -> None:
    metadata.create_all(engine, tables=[key_uses])


class KeyUses:
    def __init__(self, engine: Engine, executor: Executor) -> None:
        self.engine = engine
        self.executor = executor
        self._written: dict[UUID, float] = {}
        self._lock = threading.Lock()

    def seen(self, key_id: UUID, at: datetime) -> None:
        """A successful use; written if this process has not written it in WRITE_EVERY."""
        now = time.monotonic()
        with self._lock:
            if now - self._written.get(key_id, -WRITE_EVERY) < WRITE_EVERY:
                return
            self._written[key_id] = now
        self.executor.submit(self._write, key_id, to_us(at))

    def _write(self, key_id: UUID, at_us: int) -> None:
        try:
            with self.engine.begin() as conn:
                changed = conn.execute(
                    update(key_uses)
                    .where(key_uses.c.key_id == str(key_id), key_uses.c.last_used_us < at_us)
                    .values(last_used_us=at_us)
                ).rowcount
                if (
                    not changed
                    and conn.execute(
                        select(key_uses.c.key_id).where(key_uses.c.key_id == str(key_id))
                    ).first()
                    is None
                ):
                    conn.execute(key_uses.insert().values(key_id=str(key_id), last_used_us=at_us))
        except IntegrityError:
            pass  # another process wrote it first: a later minute's write moves it on
        except Exception:
            log.exception("recording a management key's last use failed")


def last_uses(engine: Engine, key_ids: Iterable[UUID]) -> dict[UUID, datetime]:
    ids = [str(key_id) for key_id in key_ids]
    if not ids:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(select(key_uses).where(key_uses.c.key_id.in_(ids))).all()
    return {UUID(row.key_id): moment for row in rows if (moment := from_us(row.last_used_us))}
