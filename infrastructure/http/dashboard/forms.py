"""Reading posted forms, the catalogue as form choices, and the scope form's validation."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request

from domain.errors import (
    InvalidAmount,
    InvalidName,
    InvalidPolicy,
    InvalidScope,
    UnknownScopePart,
)
from domain.keys import ApiKey
from domain.money import parse_credits
from domain.policy import POLICY_FIELDS, KeyPolicy
from domain.scope import Scope as KeyScope
from domain.scope import check_name
from infrastructure.http.dashboard.constants import MAX_FORM_BYTES, MAX_FORM_FIELDS
from infrastructure.http.dashboard.money import money
from infrastructure.http.dashboard.rendering import Refusal
from infrastructure.http.dashboard.rows import limit_text, models_text, region_text, when
from infrastructure.http.dashboard.state import Dashboard
from infrastructure.served import served
from infrastructure.times import parse_time_text

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
    # The key policy, as typed (empty: none). Names are the API's.
    policy_text: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of_key(cls, key: ApiKey) -> "ScopeForm":
        scope = key.scope
        return cls(
            name=key.name,
            models=list(scope.models or []),
            region=scope.region or "",
            daily_limit=money(scope.daily_limit) if scope.daily_limit is not None else "",
            errors={},
            policy_text=policy_text(key.policy),
        )

    @classmethod
    def read(cls, form: ImmutableMultiDict[str, str]) -> "ScopeForm":
        return cls(
            name=form.get("name", ""),
            models=list(dict.fromkeys(form.getlist("models"))),
            region=form.get("region", "").strip(),
            daily_limit=form.get("daily_limit", "").strip(),
            errors={},
            policy_text={name: form.get(name, "").strip()[:4000] for name in POLICY_FIELDS},
        )

    def hidden(self) -> list[tuple[str, str]]:
        """The form again, as the confirmation page's hidden fields."""
        return (
            [("models", m) for m in self.models]
            + [("region", self.region), ("daily_limit", self.daily_limit)]
            + [(name, self.policy_text.get(name, "")) for name in POLICY_FIELDS]
        )

    def policy(self, now: datetime, current: KeyPolicy | None = None) -> KeyPolicy | None:
        """The policy, or None with `errors` filled (by the domain's rules, per field). An
        expiry must be in the future, unless it is the one the key already has."""
        text = self.policy_text
        values: dict[str, Any] = {}
        for name in POLICY_FIELDS:
            raw = text.get(name, "")
            if not raw:
                continue
            try:
                values[name] = _policy_value(name, raw)
                KeyPolicy(**{name: values[name]})
            except (InvalidPolicy, InvalidAmount, ValueError) as error:
                self.errors[name] = f"{error}."
        expires = values.get("expires_at")
        if (
            expires is not None
            and expires <= now
            and (current is None or current.expires_at != expires)
        ):
            self.errors["expires_at"] = "The expiry is in the past; revoke the key to stop it now."
        if any(name in self.errors for name in POLICY_FIELDS):
            return None
        return KeyPolicy(**values)

    def scope(self, dashboard: Dashboard, current: KeyScope | None = None) -> KeyScope | None:
        """The scope, or None with `errors` filled. Models and regions must be the catalogue's
        (or already in the key's scope, so an edit can keep what the catalogue no longer has):
        the one check of domain.scope.Served."""
        try:
            served(dashboard.gateway.catalogue).check(self.models, self.region or None, current)
        except UnknownScopePart as error:
            self.errors[error.field] = f"{str(error)[0].upper()}{str(error)[1:]}."
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


def _policy_value(name: str, raw: str) -> Any:
    if name == "expires_at":
        return parse_time_text(raw)
    if name == "monthly_limit":
        return parse_credits(raw)
    if name == "allowed_ips":
        return tuple(part for part in raw.replace(",", " ").split() if part)
    if not raw.isdigit():
        raise ValueError("enter a whole number")
    return int(raw)


def policy_text(policy: KeyPolicy) -> dict[str, str]:
    """A policy as the form shows it."""
    return {
        "expires_at": policy.expires_at.strftime("%Y-%m-%dT%H:%M") if policy.expires_at else "",
        "requests_per_minute": str(policy.requests_per_minute or ""),
        "tokens_per_minute": str(policy.tokens_per_minute or ""),
        "max_concurrent": str(policy.max_concurrent or ""),
        "allowed_ips": "\n".join(policy.allowed_ips or ()),
        "monthly_limit": money(policy.monthly_limit) if policy.monthly_limit is not None else "",
    }


def _or_none(value: object, unit: str = "") -> str:
    return "none" if value is None else f"{value}{unit}"


def policy_rows(policy: KeyPolicy) -> list[tuple[str, str]]:
    return [
        ("Expires", when(policy.expires_at) if policy.expires_at else "never"),
        ("Requests per minute", _or_none(policy.requests_per_minute)),
        ("Tokens per minute", _or_none(policy.tokens_per_minute)),
        ("Requests at once", _or_none(policy.max_concurrent)),
        ("Allowed networks", ", ".join(policy.allowed_ips) if policy.allowed_ips else "any"),
        (
            "Monthly limit",
            "no limit"
            if policy.monthly_limit is None
            else f"{money(policy.monthly_limit)} credits a month",
        ),
    ]


def scope_changes(
    old: KeyScope,
    new: KeyScope,
    old_policy: KeyPolicy | None = None,
    new_policy: KeyPolicy | None = None,
) -> list[tuple[str, str, str]]:
    """(what, before, after) for the confirmation page."""
    rows = [
        ("Models", models_text(old.models), models_text(new.models)),
        ("Region", region_text(old.region), region_text(new.region)),
        ("Daily limit", limit_text(old.daily_limit), limit_text(new.daily_limit)),
    ]
    if old_policy is not None and new_policy is not None:
        rows += [
            (what, before, after)
            for (what, before), (_, after) in zip(
                policy_rows(old_policy), policy_rows(new_policy), strict=True
            )
        ]
    return rows
