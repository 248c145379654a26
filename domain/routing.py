"""Routing: which (model, provider) pairs may serve a request of a key, in the order to try them.

Pure rules over the catalogue (loaded from the TOML file by infrastructure.catalogue): the key's
scope (models, region), the model's kind (chat or embedding) and the providers' dialects (an
Anthropic-dialect provider speaks only chat-like APIs, through translation).
"""

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Literal

from domain.pricing import PriceSheet
from domain.scope import Scope

AUTO_MODEL = "lowrouter/auto"

Dialect = Literal["openai", "anthropic"]
DIALECTS: tuple[Dialect, ...] = ("openai", "anthropic")
ModelKind = Literal["chat", "embedding"]
MODEL_KINDS: tuple[ModelKind, ...] = ("chat", "embedding")


class RoutingError(Exception):
    """A request's model cannot be served for this key (answered at the edge by
    infrastructure.error_table)."""


class ModelNotFound(RoutingError, LookupError):
    """No model of this id in the catalogue."""


class ModelNotAllowed(RoutingError):
    """The key's scope does not include the model."""


class RegionUnavailable(RoutingError):
    """No provider of the model is in the key's region."""


class NoModelAvailable(RoutingError):
    """`lowrouter/auto` found no model the key may use."""


class WrongModelKind(RoutingError):
    """A chat model asked for embeddings, or an embedding model asked to chat."""


class ApiNotServed(RoutingError):
    """No provider of the model speaks a dialect that can serve this API."""


class ParameterNotAllowed(RoutingError):
    """A request field outside its API's schema that a provider of the request does not allow
    (`extra_fields` in the catalogue)."""

    def __init__(self, field: str, provider: str | None) -> None:
        self.param = field
        allowed = (
            f"provider {_q(provider)} does not allow it (extra_fields in the catalogue)"
            if provider
            else "it is not a parameter of this API, or its value is priced beyond the hold"
        )
        super().__init__(f"parameter {_q(field[:64])} is not accepted: {allowed}")


# The output-cap fields an OpenAI-dialect chat upstream is sent (both, unless the operator
# names the one it takes: OpenAI's reasoning models refuse `max_tokens`).
CAP_FIELDS: tuple[str, ...] = ("max_tokens", "max_completion_tokens")


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    base_url: str  # without a trailing "/", e.g. "https://api.openai.com/v1"
    api_key_env: str  # "" when the upstream needs no credential
    region: str
    api_key: str | None = field(default=None, repr=False)  # never printed
    api: Dialect = "openai"  # the upstream's wire dialect
    extra_fields: frozenset[str] = frozenset()  # request fields beyond the API's schema it takes
    cap_fields: tuple[str, ...] = CAP_FIELDS  # where a chat request's output cap is sent


@dataclass(frozen=True, slots=True)
class ModelEntry:
    id: str
    providers: tuple[str, ...]
    upstream_model: str
    prompt_price: int  # micro-credits per million prompt tokens
    completion_price: int  # micro-credits per million completion tokens
    max_output_tokens: int
    demo: bool = False
    cached_prompt_price: int | None = None  # cache reads; None: the prompt price
    cache_write_price: int | None = None  # cache writes; None: the prompt price
    kind: ModelKind = "chat"

    @property
    def price(self) -> int:
        """The ordering price for `lowrouter/auto`: prompt plus completion per million."""
        return self.prompt_price + self.completion_price

    @property
    def prices(self) -> PriceSheet:
        return PriceSheet(
            self.prompt_price,
            self.completion_price,
            self.cached_prompt_price,
            self.cache_write_price,
        )


Candidate = tuple[ModelEntry, Provider]


def check_extra_fields(candidates: Collection[Candidate], fields: Collection[str]) -> None:
    """Fields beyond the API's schema pass only if every provider that may serve the request
    allows them; else ParameterNotAllowed names the first (before anything is held)."""
    for name in sorted(fields):
        refusing = next((p.name for _, p in candidates if name not in p.extra_fields), None)
        if refusing is not None or not candidates:
            known = any(name in p.extra_fields for _, p in candidates)
            raise ParameterNotAllowed(name, refusing if known else None)


@dataclass(frozen=True)
class Catalogue:
    providers: dict[str, Provider]
    models: dict[str, ModelEntry]

    def candidates(
        self,
        model_id: str,
        scope: Scope,
        kind: ModelKind = "chat",
        dialects: Collection[Dialect] = DIALECTS,
    ) -> list[Candidate]:
        """The (model, provider) pairs to try, in order, for a request from a key with `scope`
        to an API that needs models of `kind` served by providers speaking one of `dialects`."""
        if model_id == AUTO_MODEL:
            return self._auto_candidates(scope, kind, dialects)
        entry = self.models.get(model_id)
        if entry is None:
            raise ModelNotFound(self._not_found_message(model_id, scope, kind))
        if not scope.allows_model(model_id):
            raise ModelNotAllowed(f"model {_q(model_id)} is outside this key's scope")
        if entry.kind != kind:
            where = "POST /embeddings" if entry.kind == "embedding" else "a chat API"
            raise WrongModelKind(
                f"model {_q(model_id)} is a{'n' if entry.kind == 'embedding' else ''} "
                f"{entry.kind} model; use it with {where}"
            )
        pairs = self._providers_in_region(entry, scope.region)
        if not pairs:
            raise RegionUnavailable(
                f"model {_q(model_id)} has no provider in region {_q(scope.region or '')}, "
                "the region this key is pinned to"
            )
        served = [(e, p) for e, p in pairs if p.api in dialects]
        if not served:
            names = ", ".join(sorted({p.api for _, p in pairs}))
            raise ApiNotServed(
                f"model {_q(model_id)} is served only by {names}-dialect providers, "
                "which cannot serve this API"
            )
        return served

    def allowed_models(self, scope: Scope, kind: ModelKind | None = None) -> list[ModelEntry]:
        """The models a key with `scope` may use (and reach in its region), in catalogue order;
        only those of `kind` when given."""
        return [
            entry
            for entry in self.models.values()
            if (kind is None or entry.kind == kind)
            and scope.allows_model(entry.id)
            and self._providers_in_region(entry, scope.region)
        ]

    def _auto_candidates(
        self, scope: Scope, kind: ModelKind, dialects: Collection[Dialect]
    ) -> list[Candidate]:
        if kind != "chat":
            raise WrongModelKind(f"{AUTO_MODEL} routes chat models only; name a {kind} model")
        entries = sorted(self.allowed_models(scope, kind), key=lambda e: (e.price, e.id))
        pairs = [
            pair
            for entry in entries
            for pair in self._providers_in_region(entry, scope.region)
            if pair[1].api in dialects
        ]
        if not pairs:
            where = f" in region {_q(scope.region)}" if scope.region else ""
            raise NoModelAvailable(f"{AUTO_MODEL} found no model this key may use{where}")
        return pairs

    def _providers_in_region(self, entry: ModelEntry, region: str | None) -> list[Candidate]:
        providers = (self.providers[name] for name in entry.providers)
        return [(entry, p) for p in providers if region is None or p.region == region]

    def _not_found_message(self, model_id: str, scope: Scope, kind: ModelKind) -> str:
        available = [entry.id for entry in self.allowed_models(scope, kind)]
        if not available:
            return f"model {_q(model_id)} does not exist, and no model is available to this key"
        shown = ", ".join(_q(model) for model in available[:5])
        more = f" and {len(available) - 5} more" if len(available) > 5 else ""
        auto = f"or {_q(AUTO_MODEL)}; " if kind == "chat" else ""
        return (
            f"model {_q(model_id)} does not exist; available: {shown}{more} "
            f"({auto}GET /models lists them)"
        )


def _q(text: str) -> str:
    """Quote a name the way TOML and the messages show it: "openai/gpt-4o"."""
    return json.dumps(text, ensure_ascii=False)
