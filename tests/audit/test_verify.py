"""Tamper evidence: the hash chain over the stored event log names the first position where the
log was altered, removed, reordered or inserted, on SQLite and PostgreSQL; a checkpoint kept
outside the database proves the log's prefix, even against someone who rewrote lr_chain too.

Tampering is done the way an intruder with database access would: SQL on the event table itself.
"""

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import delete, func, select, text, update

from domain.actor import Actor
from domain.scope import Scope
from domain.usage import Usage
from infrastructure.chain import store as chain
from infrastructure.chain.encoding import ChainError, Malformed
from infrastructure.chain.store import catch_up_chain, verify, verify_against, write_checkpoint
from infrastructure.runtime import Runtime, open_runtime
from infrastructure.settings import Settings
from projections.schema import positions

OPERATOR = Actor("operator", "test")
CREDITS = 987_654_321


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    opened = open_runtime(settings)
    yield opened
    opened.close()


# A realistic log ---------------------------------------------------------------------------------


def spend(runtime: Runtime, account_id: UUID, key_id: UUID, cost: int, settle: bool = True) -> None:
    request = f"req-{uuid.uuid4().hex}"
    runtime.spend.reserve(account_id, request, key_id, "a/b", cost * 2, None).result()
    if not settle:
        runtime.spend.release(account_id, request, "upstream failed").result()
        return
    runtime.spend.settle(
        account_id,
        request,
        cost,
        Usage(
            key_name="ci",
            model="a/b",
            provider="p",
            region=None,
            prompt_tokens=10,
            completion_tokens=20,
            status="ok",
            status_code=200,
            latency_ms=5,
            streamed=False,
            client_ip="127.0.0.1",
            user_agent="test",
        ),
    ).result()


def build_log(runtime: Runtime) -> tuple[UUID, UUID]:
    """An account funded, two keys (one scoped, one revoked), spends and a released hold."""
    account_id = runtime.app.open_account("audited", OPERATOR, credits=CREDITS).account.id
    ci = runtime.app.create_key(account_id, "ci", Scope(), OPERATOR).key.id
    laptop = runtime.app.create_key(account_id, "laptop", Scope(), OPERATOR).key.id
    runtime.app.scope_key(ci, Scope(models=("a/b",), daily_limit=5_000_000), OPERATOR)
    spend(runtime, account_id, ci, 1200)
    spend(runtime, account_id, laptop, 700)
    spend(runtime, account_id, ci, 300, settle=False)
    runtime.app.revoke_key(laptop, OPERATOR, reason="leak")
    spend(runtime, account_id, ci, 450)
    return account_id, ci


@pytest.fixture
def chained(runtime: Runtime) -> tuple[UUID, UUID]:
    """The realistic log, all of it chained."""
    ids = build_log(runtime)
    catch_up_chain(runtime)
    return ids


def positions_of(runtime: Runtime, topic_suffix: str) -> list[int]:
    notifications = runtime.app.recorder.select_notifications(start=1, limit=100_000)
    return [n.id for n in notifications if n.topic.endswith(topic_suffix)]


def log_head(runtime: Runtime) -> int:
    return int(runtime.app.recorder.max_notification_id() or 0)


# Tampering with the stored events directly -------------------------------------------------------


class EventTable:
    """Raw SQL on eventsourcing's table. Its notification id is SQLite's rowid, and a
    bigserial column on PostgreSQL."""

    def __init__(self, runtime: Runtime) -> None:
        self.engine = runtime.engine
        self.postgres = self.engine.dialect.name == "postgresql"
        self.name = runtime.app.recorder.events_table_name  # type: ignore[attr-defined]
        self.id = "notification_id" if self.postgres else "rowid"

    def _run(self, sql: str, **params: object) -> None:
        with self.engine.begin() as conn:
            conn.execute(text(sql.format(t=f'"{self.name}"', id=self.id)), params)

    def state(self, position: int) -> bytes:
        with self.engine.connect() as conn:
            sql = text(f'SELECT state FROM "{self.name}" WHERE {self.id} = :p')
            return bytes(conn.execute(sql, {"p": position}).scalar_one())

    def set_state(self, position: int, state: bytes) -> None:
        self._run("UPDATE {t} SET state = :s WHERE {id} = :p", s=state, p=position)

    def delete(self, position: int) -> None:
        self._run("DELETE FROM {t} WHERE {id} = :p", p=position)

    def swap(self, a: int, b: int) -> None:
        """Two events trade places in the log (their rows keep their contents)."""
        self._run("UPDATE {t} SET {id} = -1 WHERE {id} = :a", a=a)
        self._run("UPDATE {t} SET {id} = :a WHERE {id} = :b", a=a, b=b)
        self._run("UPDATE {t} SET {id} = :b WHERE {id} = -1", b=b)

    def copy(self, source: int, to: int) -> None:
        """A forged event: a copy of another one (a new version, so the key allows it)."""
        self._run(
            "INSERT INTO {t} ({id}, originator_id, originator_version, topic, state) "
            "SELECT :to, originator_id, originator_version + 1000, topic, state "
            "FROM {t} WHERE {id} = :source",
            to=to,
            source=source,
        )

    @contextmanager
    def skipping_an_id(self) -> Iterator[None]:
        """The next append leaves a gap in the notification ids, as a rolled-back append does on
        PostgreSQL (SQLite reuses max(rowid)+1, so a placeholder row holds the id meanwhile)."""
        if self.postgres:
            self._run("SELECT nextval(pg_get_serial_sequence('{t}', 'notification_id'))")
            yield
            return
        placeholder = uuid.uuid4().hex
        self._run(
            "INSERT INTO {t} (originator_id, originator_version, topic, state) "
            "VALUES (:o, 1, 'tests:Placeholder', x'')",
            o=placeholder,
        )
        yield
        self._run("DELETE FROM {t} WHERE originator_id = :o", o=placeholder)


def funded_position(runtime: Runtime) -> int:
    (position,) = positions_of(runtime, "LedgerPage.Funded")
    return position


def forge_funding(runtime: Runtime, position: int) -> None:
    """Edit the stored bytes of the Funded event: more credits than were ever added."""
    table = EventTable(runtime)
    state = table.state(position)
    assert str(CREDITS).encode() in state
    table.set_state(position, state.replace(str(CREDITS).encode(), b"9" * len(str(CREDITS))))


# verify: the log against lr_chain ----------------------------------------------------------------


def test_an_untouched_log_verifies_clean(runtime: Runtime, chained: tuple[UUID, UUID]) -> None:
    report = verify(runtime)
    assert report.ok, report.message
    assert report.kind == "clean" and report.position is None
    assert report.checked == report.chained == log_head(runtime)

    account_id, ci = chained
    spend(runtime, account_id, ci, 10)  # appended, not chained yet: not judged, still clean
    later = verify(runtime)
    assert later.ok and "not chained yet" in later.message
    assert catch_up_chain(runtime) == 2
    assert verify(runtime).checked == log_head(runtime)


def test_an_edited_event_is_altered_at_its_position(
    runtime: Runtime, chained: tuple[UUID, UUID]
) -> None:
    position = funded_position(runtime)
    forge_funding(runtime, position)
    report = verify(runtime)
    assert (report.kind, report.position) == ("altered", position)
    assert f"position {position} " in report.message
    assert report.checked == position - 1


def test_a_deleted_event_is_removed_at_its_position(
    runtime: Runtime, chained: tuple[UUID, UUID]
) -> None:
    (revoked,) = positions_of(runtime, "ApiKey.Revoked")  # hiding a revocation
    EventTable(runtime).delete(revoked)
    report = verify(runtime)
    assert (report.kind, report.position) == ("removed", revoked)
    assert f"position {revoked} " in report.message


def test_two_swapped_events_are_reordered_at_the_first(
    runtime: Runtime, chained: tuple[UUID, UUID]
) -> None:
    first, _, second, *_ = positions_of(runtime, "LedgerPage.Settled")
    EventTable(runtime).swap(first, second)
    report = verify(runtime)
    assert (report.kind, report.position) == ("reordered", first)
    assert f"position {first} holds the event chained at position {second}" in report.message


def test_two_swapped_states_are_altered_at_the_first(
    runtime: Runtime, chained: tuple[UUID, UUID]
) -> None:
    # Each row keeps its identity but takes the other's contents: an alteration of both.
    first, second = positions_of(runtime, "LedgerPage.Reserved")[:2]
    table = EventTable(runtime)
    first_state, second_state = table.state(first), table.state(second)
    table.set_state(first, second_state)
    table.set_state(second, first_state)
    report = verify(runtime)
    assert (report.kind, report.position) == ("altered", first)


def test_an_event_inserted_in_a_gap_is_inserted_at_its_position(
    runtime: Runtime, tmp_path: Path
) -> None:
    account_id, ci = build_log(runtime)
    table = EventTable(runtime)
    before = log_head(runtime)
    with table.skipping_an_id():
        spend(runtime, account_id, ci, 25)
    spend(runtime, account_id, ci, 35)
    catch_up_chain(runtime)
    chained = {row.position for row in chain_rows(runtime)}
    (gap,) = set(range(1, log_head(runtime) + 1)) - chained
    assert before < gap < log_head(runtime)
    assert verify(runtime).ok  # a gap in the ids is not tampering
    checkpoint = tmp_path / "checkpoint.json"
    write_checkpoint(runtime, checkpoint)

    table.copy(funded_position(runtime), to=gap)  # a second, forged funding
    report = verify(runtime)
    assert (report.kind, report.position) == ("inserted", gap)
    assert f"position {gap} " in report.message
    against = verify_against(runtime, checkpoint)
    assert (against.kind, against.position) == ("inserted", gap)


def test_an_event_inserted_past_the_head_extends_the_chain_and_old_checkpoints_verify(
    runtime: Runtime, chained: tuple[UUID, UUID], tmp_path: Path
) -> None:
    # Nothing can tell a forged event past the head from a real one until it is chained: a
    # checkpoint proves the prefix up to its position, and the next checkpoint covers the rest.
    checkpoint = tmp_path / "checkpoint.json"
    write_checkpoint(runtime, checkpoint)
    head = log_head(runtime)
    EventTable(runtime).copy(funded_position(runtime), to=head + 1)
    assert verify(runtime).ok
    assert catch_up_chain(runtime) == 1
    assert verify(runtime).checked == head + 1
    report = verify_against(runtime, checkpoint)
    assert report.ok, report.message
    assert report.chained == head


def chain_rows(runtime: Runtime) -> list:  # type: ignore[type-arg]
    with runtime.engine.connect() as conn:
        return list(conn.execute(select(chain.chain).order_by(chain.chain.c.position)))


# Checkpoints -------------------------------------------------------------------------------------


def test_a_checkpoint_still_verifies_after_new_events(
    runtime: Runtime, chained: tuple[UUID, UUID], tmp_path: Path
) -> None:
    path = tmp_path / "audit" / "yesterday.json"
    written = write_checkpoint(runtime, path)
    data = json.loads(path.read_text())
    assert {"position", "digest", "written_at"} <= set(data)
    assert data["position"] == written.position == log_head(runtime)
    assert data["digest"] == chain_rows(runtime)[-1].digest

    account_id, ci = chained
    spend(runtime, account_id, ci, 99)  # today's events
    runtime.app.create_key(account_id, "new", Scope(), OPERATOR)
    catch_up_chain(runtime)
    assert log_head(runtime) > written.position
    report = verify_against(runtime, path)
    assert report.ok, report.message
    assert (report.checked, report.chained) == (written.position, written.position)
    assert f"position {written.position} " in report.message


def test_a_checkpoint_does_not_trust_lr_chain(
    runtime: Runtime, chained: tuple[UUID, UUID], tmp_path: Path
) -> None:
    path = tmp_path / "checkpoint.json"
    write_checkpoint(runtime, path)
    with runtime.engine.begin() as conn:  # lr_chain gone: the proof does not need it
        conn.execute(delete(chain.chain))
    assert verify_against(runtime, path).ok


@pytest.mark.parametrize("tampering", ["edit", "delete", "swap"])
def test_tampering_below_a_checkpoint_fails_verify_against_naming_the_position(
    runtime: Runtime, chained: tuple[UUID, UUID], tmp_path: Path, tampering: str
) -> None:
    path = tmp_path / "checkpoint.json"
    checkpoint = write_checkpoint(runtime, path)
    account_id, ci = chained
    spend(runtime, account_id, ci, 5)  # appended after the checkpoint
    catch_up_chain(runtime)

    table = EventTable(runtime)
    funded = funded_position(runtime)
    settled = positions_of(runtime, "LedgerPage.Settled")
    expected = {"edit": ("altered", funded), "delete": ("removed", settled[0])}
    if tampering == "edit":
        forge_funding(runtime, funded)
    elif tampering == "delete":
        table.delete(settled[0])
    else:
        table.swap(settled[0], settled[1])
        expected["swap"] = ("reordered", settled[0])
    # (insertion below a checkpoint: test_an_event_inserted_in_a_gap_is_inserted_at_its_position)
    assert settled[1] < checkpoint.position

    report = verify_against(runtime, path)
    assert (report.kind, report.position) == expected[tampering], report.message
    assert f"position {report.position} " in report.message
    assert "checkpoint" in report.message


def test_a_rewritten_chain_fools_verify_but_not_the_checkpoint(
    runtime: Runtime, chained: tuple[UUID, UUID], tmp_path: Path
) -> None:
    path = tmp_path / "checkpoint.json"
    write_checkpoint(runtime, path)
    forge_funding(runtime, funded_position(runtime))
    with runtime.engine.begin() as conn:  # the intruder re-chains the forged log
        conn.execute(delete(chain.chain))
        conn.execute(update(positions).where(positions.c.name == "chain").values(position=0))
    catch_up_chain(runtime)
    assert verify(runtime).ok
    report = verify_against(runtime, path)
    assert not report.ok
    assert report.kind == "differs" and report.position is None


# Catching up -------------------------------------------------------------------------------------


def test_a_batch_chained_by_another_process_meanwhile_is_not_chained_twice(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_log(runtime)
    read = chain._read_rows
    raced: list[int] = []

    def read_then_lose_the_race(*args: Any) -> Any:
        rows = read(*args)
        if not raced:  # another process chains everything before this batch is claimed
            raced.append(0)
            raced[0] = catch_up_chain(runtime)
        return rows

    monkeypatch.setattr(chain, "_read_rows", read_then_lose_the_race)
    assert catch_up_chain(runtime) == 0  # its claim failed: the position had moved on
    assert raced == [log_head(runtime)]
    assert [row.position for row in chain_rows(runtime)] == list(range(1, log_head(runtime) + 1))
    assert verify(runtime).ok


def test_parallel_catch_ups_chain_each_event_once(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_log(runtime)
    monkeypatch.setattr(chain, "BATCH_SIZE", 3)  # many small batches
    errors: list[BaseException] = []

    def run() -> None:
        try:
            catch_up_chain(runtime)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    with runtime.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(chain.chain)).scalar() == log_head(
            runtime
        )
    report = verify(runtime)
    assert report.ok and report.checked == log_head(runtime)


def test_a_tampered_log_refuses_a_new_checkpoint(
    runtime: Runtime, chained: tuple[UUID, UUID], tmp_path: Path
) -> None:
    forge_funding(runtime, funded_position(runtime))
    with pytest.raises(ChainError, match="altered"):
        write_checkpoint(runtime, tmp_path / "checkpoint.json")
    assert not (tmp_path / "checkpoint.json").exists()


# SQLite keeps whatever type is written into a column ---------------------------------------------


@pytest.fixture
def sqlite_runtime(sqlite_url: str, tmp_path: Path) -> Iterator[Runtime]:
    from infrastructure.settings import load_settings
    from tests.support.stores import PEPPER

    env = {"LOWROUTER_TOKEN_PEPPER": PEPPER, "LOWROUTER_DATA_DIR": str(tmp_path)}
    opened = open_runtime(load_settings(env, database_url=sqlite_url))
    yield opened
    opened.close()


def test_rows_the_store_could_not_have_written_are_named_not_crashed_on(
    sqlite_runtime: Runtime,
) -> None:
    runtime = sqlite_runtime
    account_id, ci = build_log(runtime)
    catch_up_chain(runtime)
    settled = positions_of(runtime, "LedgerPage.Settled")
    table = EventTable(runtime)
    table._run("UPDATE {t} SET originator_id = 'not-a-uuid' WHERE {id} = :p", p=settled[1])
    table._run("UPDATE {t} SET state = CAST(state AS TEXT) WHERE {id} = :p", p=settled[0])
    report = verify(runtime)
    assert (report.kind, report.position) == ("altered", settled[0])
    assert "state is a str" in report.message

    spend(runtime, account_id, ci, 1)  # not chained yet, then tampered: never chained
    head = log_head(runtime)
    table._run("UPDATE {t} SET state = CAST(state AS TEXT) WHERE {id} = :p", p=head)
    with pytest.raises(Malformed, match=f"position {head} "):
        catch_up_chain(runtime)
    assert chain.chain_position(runtime.engine) == head - 1  # the events before it are chained
