"""A reported leak: record it on the key and, under the revoke policy, revoke the key at once.

Used by the GitHub secret-scanning endpoint and `lowrouter scan --revoke`. The revocation is an
ordinary one (reason `leak`), so it stops the key on every process on the next request; the
report and the revocation are saved together. Reporting the same find again changes nothing.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from uuid import UUID

from eventsourcing.persistence import Recording

from application.access_barrier import await_access
from application.app import Lowrouter
from application.management_keys import revoke_management_key
from application.retry import retry_on_conflict
from domain.actor import Actor
from domain.errors import DomainError
from domain.leaks import LEAK_REASON, report_leak, should_revoke
from domain.tokens import TokenFormatError, TokenKind, hash_token, parse_token


@dataclass(frozen=True)
class LeakHandled:
    key_id: UUID
    recorded: bool  # a new report (False: this source was reported before)
    revoked_now: bool


def handle_leak(
    app: Lowrouter, key_id: UUID, url: str, source: str, actor: Actor, policy: str
) -> LeakHandled:
    def command() -> tuple[LeakHandled, list[Recording[UUID]]]:
        key = app.get_key(key_id)
        now = app.clock()
        recorded = report_leak(key, url, source, actor, now)
        revoke = should_revoke(key, policy, now)
        if revoke:
            key.revoke(LEAK_REASON, actor, now)
        outcome = LeakHandled(key.id, recorded, revoke)
        return outcome, app.save(key) if (recorded or revoke) else []

    outcome, recordings = retry_on_conflict(command)
    await_access(app.access_barrier, recordings)
    return outcome


def handle_management_key_leak(
    app: Lowrouter, account_id: UUID, key_id: UUID, actor: Actor, policy: str
) -> bool:
    """A leaked management key is revoked under the revoke policy; False if it already was."""
    if policy != "revoke":
        return False
    try:
        revoke_management_key(app, account_id, key_id, actor)
    except DomainError:  # already revoked
        return False
    return True


@dataclass(frozen=True)
class FoundKey:
    """A key of this gateway, found by its token's hash."""

    kind: TokenKind
    key_id: UUID
    account_id: UUID


@dataclass(frozen=True)
class LeakReport:
    token: str  # as the scanner found it; never stored, never logged
    url: str
    source: str
    token_type: str = ""  # the scanner's name for the kind of secret


def handle_reports(
    app: Lowrouter,
    find_key: Callable[[str], FoundKey | None],
    reports: Sequence[LeakReport],
    actor: Actor,
    policy: str,
) -> list[bool]:
    """For each report: is it a real key of this gateway (a true positive)? Each true positive
    is recorded and, under the revoke policy, revoked. Malformed tokens and tokens with a wrong
    checksum are false positives without a lookup."""
    answers = []
    for report in reports:
        try:
            token = parse_token(report.token)
        except TokenFormatError:
            answers.append(False)
            continue
        found = find_key(hash_token(app.pepper, token))
        if found is None:
            answers.append(False)
            continue
        if found.kind is TokenKind.INFERENCE:
            handle_leak(app, found.key_id, report.url, report.source, actor, policy)
        else:
            handle_management_key_leak(app, found.account_id, found.key_id, actor, policy)
        answers.append(True)
    return answers
