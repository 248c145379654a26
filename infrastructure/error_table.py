"""The one table of how the edge answers a refusal of the domain or the application: for each
error type its HTTP status, API code, message and `param`, and the dashboard page's title.

It is rendered three ways, each a few lines next to its surface: as the API's JSON error
(`infrastructure.http.errors.api_error`), as the dashboard's error page
(`infrastructure.http.dashboard.rendering.refusal_for`) and as the CLI's one line on stderr
with exit code 1 (`cli_line`, used by `infrastructure.cli.app.main`). An error is answered by the
entry of its most specific type; every DomainError has its own entry (a test walks them).
Errors outside ANSWERED are unexpected: a 500 on the API, a named error on the CLI.

A path names one kind of thing (a `Subject`): its 404 names that kind, and a webhook's change
waits on the webhook list rather than on the key lookup.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from application.app import AccountExists
from application.metering import REFUSALS
from application.retry import TooMuchContention
from domain.errors import (
    ConcurrencyLimitExceeded,
    DailyLimitExceeded,
    DomainError,
    InsufficientCredits,
    InvalidAmount,
    InvalidGrace,
    InvalidName,
    InvalidPolicy,
    InvalidScope,
    KeyRevoked,
    MonthlyLimitExceeded,
    NotFound,
    RateLimitExceeded,
    TooManyKeys,
    UnknownScopePart,
)
from domain.flags import InvalidFlag
from domain.routing import (
    ApiNotServed,
    ModelNotAllowed,
    ModelNotFound,
    NoModelAvailable,
    ParameterNotAllowed,
    RegionUnavailable,
    RoutingError,
    WrongModelKind,
)
from domain.webhooks import InvalidWebhook, WebhookRemoved
from projections.runner import ProjectionLagging

CLI_REFUSED = 1  # the CLI's exit code for a refusal (2 is a usage error: infrastructure.cli)


@dataclass(frozen=True)
class Answer:
    """The answer to one error, the same on every surface."""

    status: int
    code: str
    message: str  # the API's message and the CLI's line
    title: str  # the dashboard page's heading
    param: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    page_message: str | None = None  # where a page's advice differs from the API's

    @property
    def page_text(self) -> str:
        """The dashboard page's message: a sentence."""
        text = self.page_message or self.message
        return text if text.endswith(".") else f"{text}."


def error_text(error: BaseException) -> str:
    return str(error) or type(error).__name__


def fixed(text: str) -> Callable[[Any], str]:
    """A message that does not depend on the error (it says nothing the caller may not know)."""
    return lambda _error: text


@dataclass(frozen=True)
class Entry:
    """One row of the table: how errors of one type are answered."""

    status: int
    code: str | Callable[[Any], str]
    title: str
    message: Callable[[Any], str] = error_text
    param: str | Callable[[Any], str | None] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    page_message: str | None = None

    def answer(self, error: BaseException) -> Answer:
        code = self.code(error) if callable(self.code) else self.code
        param = self.param(error) if callable(self.param) else self.param
        return Answer(
            self.status,
            code,
            self.message(error),
            self.title,
            param,
            self.headers,
            self.page_message,
        )


@dataclass(frozen=True)
class Subject:
    """The kind of thing a path names: what its 404 says, on the API and on a page."""

    noun: str
    code: str
    param: str | None

    def not_found(self) -> Entry:
        return Entry(
            404,
            self.code,
            "Not found",
            fixed(f"No {self.noun} with this id in this account."),
            self.param,
            page_message=f"There is no {self.noun} with this id in your account.",
        )


KEY = Subject("key", "key_not_found", "id")
MANAGEMENT_KEY = Subject("management key", "management_key_not_found", "id")
WEBHOOK = Subject("webhook", "webhook_not_found", None)

NOT_ACCEPTED = "Not accepted"
NOT_POSSIBLE = "Not possible"
LIMIT_REACHED = "Limit reached"

LOOKUP_LAGGING = (
    "The change was recorded, but the key lookup has not caught up with it yet; it takes "
    "effect once it does. Check `lowrouter projections status` before retrying."
)
LOOKUP_LAGGING_PAGE = (
    "The change was recorded, but the key lookup has not caught up with it yet; it takes "
    "effect once it does. Reload the keys page in a moment before trying again."
)


def _webhook_param(error: InvalidWebhook) -> str:
    return "events" if "event" in str(error) else "url"


TABLE: dict[type[BaseException], Entry] = {
    # What a caller sent is not acceptable (422): the param names the field.
    InvalidName: Entry(422, "invalid_name", NOT_ACCEPTED, param="name"),
    InvalidScope: Entry(422, "invalid_scope", NOT_ACCEPTED),
    UnknownScopePart: Entry(
        422,
        lambda error: error.code,
        NOT_ACCEPTED,
        lambda error: f"{error}.",
        lambda error: error.field,
    ),
    InvalidPolicy: Entry(422, "invalid_policy", NOT_ACCEPTED),
    InvalidAmount: Entry(422, "invalid_amount", NOT_ACCEPTED, param="daily_limit"),
    InvalidGrace: Entry(422, "invalid_value", NOT_ACCEPTED, param="grace_seconds"),
    InvalidWebhook: Entry(422, "invalid_webhook", NOT_ACCEPTED, param=_webhook_param),
    # No such thing (the API's paths answer their Subject's 404 instead; the CLI says which).
    NotFound: Entry(404, "not_found", "Not found"),
    # The thing's state refuses the change (409).
    KeyRevoked: Entry(409, "key_revoked", "Key revoked"),
    TooManyKeys: Entry(409, "too_many_keys", NOT_POSSIBLE),
    WebhookRemoved: Entry(409, "webhook_removed", NOT_POSSIBLE),
    AccountExists: Entry(409, "conflict", NOT_POSSIBLE),
    InvalidFlag: Entry(409, "conflict", NOT_POSSIBLE),
    DomainError: Entry(409, "conflict", NOT_POSSIBLE),
    # The ledger's refusals of a request's reservation: the code is the reason the ledger
    # records (application.metering.REFUSALS, not an HTTP concern, so stated there only); the
    # status is here; infrastructure.http.refusals words the inference answers.
    InsufficientCredits: Entry(402, REFUSALS[InsufficientCredits], "Not enough credits"),
    DailyLimitExceeded: Entry(429, REFUSALS[DailyLimitExceeded], LIMIT_REACHED),
    MonthlyLimitExceeded: Entry(429, REFUSALS[MonthlyLimitExceeded], LIMIT_REACHED),
    RateLimitExceeded: Entry(429, REFUSALS[RateLimitExceeded], LIMIT_REACHED),
    ConcurrencyLimitExceeded: Entry(429, REFUSALS[ConcurrencyLimitExceeded], LIMIT_REACHED),
    # Routing: the request's model cannot be served for this key.
    RoutingError: Entry(400, "model_unavailable", "Model unavailable", param="model"),
    ModelNotFound: Entry(404, "model_not_found", "Model not found", param="model"),
    ModelNotAllowed: Entry(403, "model_not_allowed", "Model not allowed", param="model"),
    RegionUnavailable: Entry(403, "region_unavailable", "Region unavailable", param="model"),
    NoModelAvailable: Entry(403, "no_model_available", "No model available", param="model"),
    WrongModelKind: Entry(400, "wrong_model_kind", "Wrong kind of model", param="model"),
    ApiNotServed: Entry(400, "api_not_supported", "API not served", param="model"),
    ParameterNotAllowed: Entry(
        400, "unknown_parameter", NOT_ACCEPTED, param=lambda error: error.param
    ),
    # The application could not do it now; a retry may (503).
    TooMuchContention: Entry(
        503,
        "busy",
        "Busy",
        headers={"Retry-After": "1"},
        page_message="The account is busy; try again in a moment.",
    ),
    ProjectionLagging: Entry(
        503,
        "lookup_lagging",
        "Recorded, not yet in effect",
        fixed(LOOKUP_LAGGING),
        page_message=LOOKUP_LAGGING_PAGE,
    ),
}

# Where a path's Subject answers differently from the table.
BY_SUBJECT: dict[Subject, dict[type[BaseException], Entry]] = {
    KEY: {NotFound: KEY.not_found()},
    MANAGEMENT_KEY: {NotFound: MANAGEMENT_KEY.not_found()},
    WEBHOOK: {
        NotFound: WEBHOOK.not_found(),
        ProjectionLagging: Entry(
            503,
            "webhooks_lagging",
            "Recorded, not yet listed",
            fixed("The change was recorded; the webhook list has not caught up."),
        ),
    },
}


# The errors the table answers: every refusal of the domain, of routing and of the application.
ANSWERED = (DomainError, RoutingError, TooMuchContention, ProjectionLagging)
AnsweredError = DomainError | RoutingError | TooMuchContention | ProjectionLagging


def entry_for(error: AnsweredError, about: Subject | None = None) -> Entry:
    """The entry of the error's most specific type, its Subject's first (each of ANSWERED has
    one, so every answered error finds one)."""
    special = BY_SUBJECT.get(about, {}) if about is not None else {}
    for kind in type(error).__mro__:
        found = special.get(kind) or TABLE.get(kind)
        if found is not None:
            return found
    raise LookupError(f"the error table has no entry for {type(error).__name__}")


def answer_to(error: AnsweredError, about: Subject | None = None) -> Answer:
    return entry_for(error, about).answer(error)


def cli_line(error: AnsweredError) -> tuple[int, str]:
    """The CLI's exit code and one-line message. The CLI is the operator's: a missing thing is
    named by the error's own text (no Subject)."""
    return CLI_REFUSED, answer_to(error).message
