"""Who caused a change, recorded on every lifecycle event for the audit trail."""

from dataclasses import dataclass
from typing import Literal

ActorKind = Literal["operator", "management_key", "dashboard", "reconciler", "system"]


@dataclass(frozen=True, slots=True)
class Actor:
    kind: ActorKind
    name: str  # e.g. "cli:alice", "lr-mk-AbCd…wXyZ"; never a token
    address: str | None = None  # client address, when the change came over the network

    def as_dict(self) -> dict[str, str | None]:
        return {"kind": self.kind, "name": self.name, "address": self.address}


SYSTEM = Actor("system", "lowrouter")
RECONCILER = Actor("reconciler", "lowrouter reconcile")
