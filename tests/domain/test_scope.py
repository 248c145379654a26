"""Scope: which models, which region, how much per UTC day; validated when built."""

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import InvalidScope
from domain.scope import MAX_MODELS, Scope

model_ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,40}\Z")
regions = st.from_regex(r"\A[a-z0-9][a-z0-9-]{0,31}\Z")
limits = st.none() | st.integers(0, 10**15)
model_lists = st.none() | st.lists(model_ids, min_size=1, max_size=8, unique=True).map(tuple)


@given(model_lists, st.none() | regions, limits)
def test_valid_scopes_are_accepted_and_survive_event_fields(
    models: tuple[str, ...] | None, region: str | None, limit: int | None
) -> None:
    scope = Scope(models, region, limit)
    fields = scope.as_fields()
    assert fields["models"] is None or isinstance(fields["models"], list)
    assert Scope.from_fields(**fields) == scope  # type: ignore[arg-type]


def test_default_scope_allows_everything() -> None:
    scope = Scope()
    assert (scope.models, scope.region, scope.daily_limit) == (None, None, None)
    assert scope.allows_model("openai/gpt-4o")
    assert scope.allows_model("lowrouter/echo")


def test_empty_model_list_is_refused() -> None:
    with pytest.raises(InvalidScope, match="at least one model"):
        Scope(models=())


@pytest.mark.parametrize(
    "model",
    [
        "",
        " ",
        "/gpt-4o",
        "-gpt",
        ".gpt",
        "gpt 4o",
        "openai/gpt 4o",
        "gpt\t4o",
        "gpt\n4o",
        "gpt;drop",
        "a" * 129,
        "modèle",
        "openai/gpt-4o*",
        42,
        None,
    ],
)
def test_malformed_model_ids_are_refused(model: Any) -> None:
    with pytest.raises(InvalidScope, match="not a model id"):
        Scope(models=("openai/gpt-4o", model))


def test_longest_model_id_is_accepted() -> None:
    assert Scope(models=("a" * 128,)).models == ("a" * 128,)


@given(st.lists(model_ids, min_size=1, max_size=5, unique=True), st.data())
def test_a_model_listed_twice_is_refused(models: list[str], data: st.DataObject) -> None:
    repeated = data.draw(st.sampled_from(models))
    position = data.draw(st.integers(0, len(models)))
    with pytest.raises(InvalidScope, match="twice"):
        Scope(models=(*models[:position], repeated, *models[position:]))


def test_too_many_models_are_refused() -> None:
    Scope(models=tuple(f"m{i}" for i in range(MAX_MODELS)))
    with pytest.raises(InvalidScope, match=f"at most {MAX_MODELS}"):
        Scope(models=tuple(f"m{i}" for i in range(MAX_MODELS + 1)))


@pytest.mark.parametrize(
    "region", ["", "EU", "Eu", "eu_west", "-eu", "eu west", "e" * 33, "eu/west", "ü", 5, ("eu",)]
)
def test_malformed_regions_are_refused(region: Any) -> None:
    with pytest.raises(InvalidScope, match="not a region"):
        Scope(region=region)


@given(regions)
def test_well_formed_regions_are_accepted(region: str) -> None:
    assert Scope(region=region).region == region


@given(st.integers(max_value=-1))
def test_negative_daily_limit_is_refused(limit: int) -> None:
    with pytest.raises(InvalidScope, match="daily limit"):
        Scope(daily_limit=limit)


@pytest.mark.parametrize("limit", [1.5, 5.0, "5", "5.000000", float("nan")])
def test_daily_limit_must_be_whole_micro_credits(limit: Any) -> None:
    with pytest.raises(InvalidScope, match="daily limit"):
        Scope(daily_limit=limit)


def test_zero_daily_limit_is_allowed() -> None:
    assert Scope(daily_limit=0).daily_limit == 0


def test_model_id_with_trailing_newline_is_refused() -> None:
    with pytest.raises(InvalidScope):
        Scope(models=("openai/gpt-4o\n",))


def test_region_with_trailing_newline_is_refused() -> None:
    with pytest.raises(InvalidScope):
        Scope(region="eu\n")


@pytest.mark.parametrize("limit", [True, False])
def test_boolean_daily_limit_is_refused(limit: bool) -> None:
    with pytest.raises(InvalidScope):
        Scope(daily_limit=limit)


# allows_model -------------------------------------------------------------------------------


@given(model_ids)
def test_scope_without_models_allows_any_model(model: str) -> None:
    assert Scope().allows_model(model)
    assert Scope(region="eu", daily_limit=0).allows_model(model)


@given(st.lists(model_ids, min_size=1, max_size=6, unique=True), model_ids)
def test_scope_with_models_allows_exactly_the_listed_models(models: list[str], other: str) -> None:
    scope = Scope(models=tuple(models))
    for model in models:
        assert scope.allows_model(model)
    assert scope.allows_model(other) == (other in models)


def test_allows_model_is_exact_not_prefix_or_case_insensitive() -> None:
    scope = Scope(models=("openai/gpt-4o",))
    assert scope.allows_model("openai/gpt-4o")
    for other in ("openai/gpt-4o-mini", "openai/gpt-4", "OpenAI/GPT-4o", "gpt-4o", "openai/*"):
        assert not scope.allows_model(other)


def test_scope_is_immutable() -> None:
    scope = Scope(models=("a",))
    with pytest.raises(AttributeError):
        scope.models = ("b",)  # type: ignore[misc]
