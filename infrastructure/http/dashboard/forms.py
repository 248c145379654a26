"""Reading posted forms, the catalogue as form choices, and the scope form's validation."""

from dataclasses import dataclass
from urllib.parse import parse_qsl

from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request

from domain.errors import (
    InvalidAmount,
    InvalidName,
    InvalidScope,
)
from domain.keys import ApiKey
from domain.money import parse_credits
from domain.scope import Scope as KeyScope
from domain.scope import check_name
from infrastructure.http.dashboard.constants import MAX_FORM_BYTES, MAX_FORM_FIELDS
from infrastructure.http.dashboard.money import money
from infrastructure.http.dashboard.rendering import Refusal
from infrastructure.http.dashboard.rows import limit_text, models_text, region_text
from infrastructure.http.dashboard.state import Dashboard

# --- forms, cookies, sessions --------------------------------------------------------------------


async def read_form(request: Request) -> ImmutableMultiDict[str, str]:
    """An application/x-www-form-urlencoded body of bounded size (the only kind our forms send)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise Refusal(415, "Unsupported form", "Send the form from the dashboard's own pages.")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise Refusal(413, "Form too large", "The form is larger than the dashboard accepts.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise Refusal(413, "Form too large", "The form is larger than the dashboard accepts.")
    try:
        pairs = parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        raise Refusal(400, "Unreadable form", "The form could not be read.") from None
    return ImmutableMultiDict(pairs)


# --- the catalogue as form choices ---------------------------------------------------------------


def catalogue_models(dashboard: Dashboard) -> list[tuple[str, str]]:
    """(id, label) of every model, demo models labelled."""
    return [
        (entry.id, f"{entry.id} (demo)" if entry.demo else entry.id)
        for entry in dashboard.gateway.catalogue.models.values()
    ]


def catalogue_regions(dashboard: Dashboard) -> list[str]:
    return sorted({p.region for p in dashboard.gateway.catalogue.providers.values()})


@dataclass
class ScopeForm:
    """What a scope form said, and what was wrong with it (by field)."""

    name: str
    models: list[str]
    region: str
    daily_limit: str
    errors: dict[str, str]

    @classmethod
    def of_key(cls, key: ApiKey) -> "ScopeForm":
        scope = key.scope
        return cls(
            name=key.name,
            models=list(scope.models or []),
            region=scope.region or "",
            daily_limit=money(scope.daily_limit) if scope.daily_limit is not None else "",
            errors={},
        )

    @classmethod
    def read(cls, form: ImmutableMultiDict[str, str]) -> "ScopeForm":
        return cls(
            name=form.get("name", ""),
            models=list(dict.fromkeys(form.getlist("models"))),
            region=form.get("region", "").strip(),
            daily_limit=form.get("daily_limit", "").strip(),
            errors={},
        )

    def scope(self, dashboard: Dashboard, current: KeyScope | None = None) -> KeyScope | None:
        """The scope, or None with `errors` filled. Models and regions must be the catalogue's
        (or already in the key's scope, so an edit can keep what the catalogue no longer has)."""
        known_models = set(dashboard.gateway.catalogue.models)
        known_regions = set(catalogue_regions(dashboard))
        if current is not None:
            known_models.update(current.models or ())
            if current.region:
                known_regions.add(current.region)
        unknown = [m for m in self.models if m not in known_models]
        if unknown:
            self.errors["models"] = f"{unknown[0]!r} is not a model of this gateway."
        if self.region and self.region not in known_regions:
            self.errors["region"] = f"No provider of this gateway serves region {self.region!r}."
        limit: int | None = None
        if self.daily_limit:
            try:
                limit = parse_credits(self.daily_limit)
            except InvalidAmount as error:
                self.errors["daily_limit"] = f"{error}."
        if self.errors:
            return None
        try:
            return KeyScope(tuple(self.models) or None, self.region or None, limit)
        except InvalidScope as error:
            self.errors["models"] = f"{error}."
            return None

    def checked_name(self) -> str | None:
        try:
            return check_name(self.name)
        except InvalidName as error:
            self.errors["name"] = f"{error}."
            return None


def scope_changes(old: KeyScope, new: KeyScope) -> list[tuple[str, str, str]]:
    """(what, before, after) for the confirmation page."""
    return [
        ("Models", models_text(old.models), models_text(new.models)),
        ("Region", region_text(old.region), region_text(new.region)),
        ("Daily limit", limit_text(old.daily_limit), limit_text(new.daily_limit)),
    ]
