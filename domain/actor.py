"""Who caused a change, recorded on every lifecycle event for the audit trail."""

from dataclasses import dataclass
from typing import Literal, TypedDict

ActorKind = Literal["operator", "management_key", "dashboard", "reconciler", "system"]


class ActorFields(TypedDict):
    """An actor as every event with an `actor` field stores it."""

    kind: ActorKind
    name: str
    address: str | None


@dataclass(frozen=True, slots=True)
class Actor:
    kind: ActorKind
    name: str  # e.g. "cli:alice", "lr-mk-AbCd…wXyZ"; never a token
    address: str | None = None  # client address, when the change came over the network

    def as_dict(self) -> ActorFields:
        return {"kind": self.kind, "name": self.name, "address": self.address}


SYSTEM = Actor("system", "lowrouter")
RECONCILER = Actor("reconciler", "lowrouter reconcile")
