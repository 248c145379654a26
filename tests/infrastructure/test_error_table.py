"""The one error table (infrastructure.error_table): every refusal has an entry, and each entry
is answered alike on the three surfaces — the API's JSON, the dashboard's page, the CLI's line."""

import argparse
import importlib
import pkgutil
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

import application
import domain
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
from infrastructure.cli import app as cli_app
from infrastructure.error_table import (
    ANSWERED,
    BY_SUBJECT,
    KEY,
    MANAGEMENT_KEY,
    TABLE,
    WEBHOOK,
    AnsweredError,
    Subject,
    answer_to,
    cli_line,
)
from infrastructure.http.dashboard.rendering import refusal_for
from infrastructure.http.errors import api_error
from projections.runner import ProjectionLagging


def subclasses(root: type) -> Iterator[type]:
    children: list[type] = root.__subclasses__()
    for child in children:
        yield child
        yield from subclasses(child)


def every_module_of(*packages: Any) -> None:
    for package in packages:
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            importlib.import_module(module.name)


every_module_of(domain, application)  # so that every error class they define is seen

# Errors whose constructor takes data; any other is built from a message.
SAMPLES: dict[type, AnsweredError] = {
    UnknownScopePart: UnknownScopePart("models", "unknown_model", "model 'x/y' is not served"),
    InsufficientCredits: InsufficientCredits(10, 5, 20),
    DailyLimitExceeded: DailyLimitExceeded(1, 2, 3, 4),
    MonthlyLimitExceeded: MonthlyLimitExceeded(1, 2, 3, 4),
    RateLimitExceeded: RateLimitExceeded("requests", 10, 10, 1.5),
    ConcurrencyLimitExceeded: ConcurrencyLimitExceeded(4),
    TooManyKeys: TooManyKeys(50),
    ParameterNotAllowed: ParameterNotAllowed("logit_bias", "p-eu"),
}


def sample(kind: type) -> AnsweredError:
    error = SAMPLES.get(kind) or kind(f"the words of a {kind.__name__}")
    assert isinstance(error, ANSWERED)
    return error


def test_every_domain_and_routing_error_has_its_own_entry() -> None:
    """Adding a refusal without deciding how the edges answer it fails here."""
    missing = [
        kind.__qualname__
        for root in (DomainError, RoutingError)
        for kind in subclasses(root)
        if kind.__module__.startswith(("domain.", "application.")) and kind not in TABLE
    ]
    assert missing == []


def test_the_walk_sees_the_errors_of_every_domain_module() -> None:
    seen = {kind for kind in subclasses(DomainError)}
    assert {InvalidGrace, InvalidWebhook, WebhookRemoved, NotFound} <= seen


ENTRIES = sorted(TABLE, key=lambda kind: kind.__qualname__)
SUBJECTS = [None, KEY, MANAGEMENT_KEY, WEBHOOK]


@pytest.mark.parametrize("about", SUBJECTS, ids=lambda s: s.code if s else "none")
@pytest.mark.parametrize("kind", ENTRIES, ids=lambda kind: kind.__qualname__)
def test_each_entry_answers_alike_as_json_page_and_cli_line(
    kind: type, about: Subject | None, capsys: pytest.CaptureFixture[str]
) -> None:
    error = sample(kind)
    answer = answer_to(error, about)

    response = api_error(error, about).response()
    body = orjson.loads(bytes(response.body))["error"]
    assert (response.status_code, body["code"], body["message"]) == (
        answer.status,
        answer.code,
        answer.message,
    )
    assert body["param"] == answer.param
    assert body["message"] and body["type"]

    page = refusal_for(error, about)
    assert (page.status, page.title) == (answer.status, answer.title)
    assert page.message.rstrip(".") == (answer.page_message or answer.message).rstrip(".")
    assert page.message.endswith(".")

    if about is None:  # the CLI names no subject: the operator sees the error's own words
        assert cli_line(error) == (1, answer.message)
        assert run_cli_raising(error, capsys) == (1, f"lowrouter: {answer.message}")


def run_cli_raising(error: Exception, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`main` of the real CLI, with a command whose handler raises `error`."""

    def handler(_context: Any, _args: Any) -> None:
        raise error

    args = argparse.Namespace(handler=handler, database_url=None, format="text")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli_app, "parse_arguments", lambda argv: args)
        code = cli_app.main(["any"])
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize(
    ("error", "about", "status", "code", "param"),
    [
        (NotFound("no key 1"), KEY, 404, "key_not_found", "id"),
        (NotFound("no key 1"), MANAGEMENT_KEY, 404, "management_key_not_found", "id"),
        (NotFound("no webhook 1"), WEBHOOK, 404, "webhook_not_found", None),
        (InvalidName("a name has 1 to 64 characters"), KEY, 422, "invalid_name", "name"),
        (UnknownScopePart("region", "unknown_region", "no region"), KEY, 422, "unknown_region",
         "region"),
        (InvalidScope("bad"), KEY, 422, "invalid_scope", None),
        (InvalidPolicy("bad"), KEY, 422, "invalid_policy", None),
        (InvalidAmount("bad"), KEY, 422, "invalid_amount", "daily_limit"),
        (InvalidGrace("bad"), KEY, 422, "invalid_value", "grace_seconds"),
        (KeyRevoked("revoked"), KEY, 409, "key_revoked", None),
        (TooManyKeys(3), KEY, 409, "too_many_keys", None),
        (DomainError("no"), KEY, 409, "conflict", None),
        (WebhookRemoved("gone"), WEBHOOK, 409, "webhook_removed", None),
        (InvalidWebhook("unknown event type"), WEBHOOK, 422, "invalid_webhook", "events"),
        (InvalidWebhook("not an https URL"), WEBHOOK, 422, "invalid_webhook", "url"),
        (TooMuchContention("busy"), KEY, 503, "busy", None),
        (ProjectionLagging("late"), KEY, 503, "lookup_lagging", None),
        (ProjectionLagging("late"), WEBHOOK, 503, "webhooks_lagging", None),
        (ModelNotFound("no"), None, 404, "model_not_found", "model"),
        (ModelNotAllowed("no"), None, 403, "model_not_allowed", "model"),
        (RegionUnavailable("no"), None, 403, "region_unavailable", "model"),
        (NoModelAvailable("no"), None, 403, "no_model_available", "model"),
        (WrongModelKind("no"), None, 400, "wrong_model_kind", "model"),
        (ApiNotServed("no"), None, 400, "api_not_supported", "model"),
        (ParameterNotAllowed("n_predict", None), None, 400, "unknown_parameter", "n_predict"),
    ],
)  # fmt: skip
def test_the_api_keeps_its_statuses_codes_and_params(
    error: AnsweredError, about: Subject | None, status: int, code: str, param: str | None
) -> None:
    """API.md's answers: a client may depend on each of these."""
    rendered = api_error(error, about)
    assert (rendered.status, rendered.code, rendered.param) == (status, code, param)


def test_a_missing_thing_is_not_described_to_the_api_but_is_to_the_operator() -> None:
    error = NotFound("no key is shown as lr-sk-abcd…wxyz")
    assert api_error(error, KEY).message == "No key with this id in this account."
    assert refusal_for(error, KEY).message == "There is no key with this id in your account."
    assert cli_line(error) == (1, "no key is shown as lr-sk-abcd…wxyz")


def test_the_busy_answer_asks_for_a_retry_after_a_second() -> None:
    rendered = api_error(TooMuchContention("too many concurrent changes"))
    assert rendered.headers["Retry-After"] == "1"
    assert "x-should-retry" not in rendered.headers


def test_the_ledger_refusals_codes_are_the_reasons_it_records() -> None:
    for kind, reason in REFUSALS.items():
        assert TABLE[kind].code == reason
        assert TABLE[kind].status in (402, 429)


def test_a_subject_only_changes_what_it_names() -> None:
    for subject, entries in BY_SUBJECT.items():
        assert set(entries) <= {NotFound, ProjectionLagging}, subject


def test_an_error_outside_the_table_is_not_answered_as_a_refusal() -> None:
    assert not isinstance(RuntimeError("boom"), ANSWERED)
    assert not isinstance(KeyError("x"), ANSWERED)
