"""A key's leak, as reported by a secret scanner (GitHub's partner program, `lowrouter scan`).

The report is a fact on the key's own stream, so the audit trail and `lowrouter investigate`
show it beside the revocation it caused: where the token was found (the URL), by whom, when.
A scanner may report the same find again: a key records each source URL once.
"""

from datetime import datetime

from eventsourcing.domain import Aggregate

from domain.actor import Actor, ActorFields
from domain.keys import ApiKey

MAX_URL_LENGTH = 2000
MAX_SOURCE_LENGTH = 100
LEAK_REASON = "leak"
POLICIES = ("revoke", "notify")  # LOWROUTER_LEAK_POLICY; revoke is the default


class LeakReported(Aggregate.Event):
    """The key's token was found where it should not be."""

    url: str  # where it was found (bounded; "" when the scanner gave none)
    source: str  # e.g. "content", "commit", "lowrouter scan"
    actor: ActorFields

    def apply(self, key: ApiKey) -> None:
        reported: list[str] | None = getattr(key, "leak_urls", None)
        if reported is None:  # ApiKey has no such field: the list joins a key on its first leak
            reported = vars(key).setdefault("leak_urls", [])
        reported.append(self.url)


def leak_urls(key: ApiKey) -> list[str]:
    return list(getattr(key, "leak_urls", []))


def report_leak(key: ApiKey, url: str, source: str, actor: Actor, at: datetime) -> bool:
    """Record the leak on the key; False (nothing recorded) when this URL was reported before."""
    url = (url or "").strip()[:MAX_URL_LENGTH]
    if url in leak_urls(key):
        return False
    key.trigger_event(
        LeakReported,
        url=url,
        source=(source or "").strip()[:MAX_SOURCE_LENGTH],
        actor=actor.as_dict(),
        timestamp=at,
    )
    return True


def should_revoke(key: ApiKey, policy: str, at: datetime) -> bool:
    """Under the revoke policy, a key that still works is revoked at once."""
    return policy == "revoke" and key.status_at(at) != "revoked"
