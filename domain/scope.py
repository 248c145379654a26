"""What a key may do: which models, through which region, and how much per UTC day."""

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, TypedDict

from domain.errors import InvalidName, InvalidScope, UnknownScopePart

MAX_MODELS = 200
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}")
_REGION = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


ScopeField = Literal["models", "region", "daily_limit"]
SCOPE_FIELDS: tuple[ScopeField, ...] = ("models", "region", "daily_limit")


class ScopeChanges(TypedDict, total=False):
    """Parts of a scope to change, from the edges: an absent one is kept, None clears it."""

    models: tuple[str, ...] | None
    region: str | None
    daily_limit: int | None


@dataclass(frozen=True, slots=True)
class Scope:
    models: tuple[str, ...] | None = None  # None: every model in the catalogue
    region: str | None = None  # None: any region
    daily_limit: int | None = None  # micro-credits per UTC day; None: no limit

    def __post_init__(self) -> None:
        if self.models is not None:
            if not self.models:
                raise InvalidScope("models must list at least one model id (or be null for all)")
            if len(self.models) > MAX_MODELS:
                raise InvalidScope(f"at most {MAX_MODELS} models per key")
            for model in self.models:
                if not isinstance(model, str) or not _MODEL_ID.fullmatch(model):
                    raise InvalidScope(f"not a model id: {str(model)[:64]!r}")
            if len(set(self.models)) != len(self.models):
                raise InvalidScope("models lists a model twice")
        if self.region is not None and (
            not isinstance(self.region, str) or not _REGION.fullmatch(self.region)
        ):
            raise InvalidScope(
                f"not a region: {str(self.region)[:40]!r} (lowercase letters, digits and '-')"
            )
        if self.daily_limit is not None and (
            not isinstance(self.daily_limit, int)
            or isinstance(self.daily_limit, bool)
            or self.daily_limit < 0
        ):
            raise InvalidScope("the daily limit must be a non-negative amount of credits")

    def allows_model(self, model_id: str) -> bool:
        return self.models is None or model_id in self.models

    def as_fields(self) -> dict[str, object]:
        """The scope as event fields (lists, not tuples, so a replay compares equal)."""
        return {
            "models": list(self.models) if self.models is not None else None,
            "region": self.region,
            "daily_limit": self.daily_limit,
        }

    def as_parts(self) -> ScopeChanges:
        """Every part, for a change that sets them all (`replace(scope, **parts)`)."""
        return {"models": self.models, "region": self.region, "daily_limit": self.daily_limit}

    @classmethod
    def from_fields(
        cls, models: list[str] | None, region: str | None, daily_limit: int | None
    ) -> "Scope":
        return cls(tuple(models) if models is not None else None, region, daily_limit)


@dataclass(frozen=True)
class Served:
    """What the gateway serves: the one check of a scope against the catalogue, used by the
    management API, the dashboard and the CLI alike."""

    models: frozenset[str]
    regions: frozenset[str]

    def check(
        self,
        models: Iterable[str] | None,
        region: str | None,
        current: Scope | None = None,
    ) -> None:
        """Refuse a model or region the gateway does not serve; one the key already has may
        stay (an edit can keep what the catalogue has since dropped)."""
        kept_models = set(current.models or ()) if current else set()
        kept_region = current.region if current else None
        for model in models or ():
            if model not in self.models and model not in kept_models:
                raise UnknownScopePart(
                    "models",
                    "unknown_model",
                    f"{model!r} is not a model of this gateway (GET /api/v1/models lists them)",
                )
        if region is not None and region not in self.regions and region != kept_region:
            served = ", ".join(sorted(self.regions)) or "none"
            raise UnknownScopePart(
                "region",
                "unknown_region",
                f"no provider of this gateway serves region {region!r} (regions: {served})",
            )


def check_name(name: object) -> str:
    """Names are 1–64 printable characters, not only spaces."""
    if not isinstance(name, str) or not 1 <= len(name) <= 64:
        raise InvalidName("a name has 1 to 64 characters")
    if not name.isprintable() or not name.strip():
        raise InvalidName("a name has only printable characters and is not blank")
    return name
