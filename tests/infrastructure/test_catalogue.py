"""The catalogue file: every configuration mistake is one line naming the file and the entry;
routing honours the key's scope and region; prices are integer micro-credits."""

from pathlib import Path

import pytest

from domain.pricing import TokenCounts, hold_for, output_cap
from domain.scope import Scope
from infrastructure.catalogue import (
    AUTO_MODEL,
    Catalogue,
    ConfigError,
    ModelEntry,
    ModelNotAllowed,
    ModelNotFound,
    NoModelAvailable,
    Provider,
    RegionUnavailable,
    demo_catalogue,
    load_catalogue,
)

ENV = {"OPENAI_API_KEY": "sk-us", "OPENAI_EU_API_KEY": "sk-eu", "CHEAP_KEY": "sk-cheap"}

PROVIDERS = """
[providers."openai"]
base_url = "https://api.openai.com/v1/"
api_key_env = "OPENAI_API_KEY"
region = "us"

[providers."openai-eu"]
base_url = "https://eu.api.example/v1"
api_key_env = "OPENAI_EU_API_KEY"
region = "eu"

[providers."cheap"]
base_url = "http://127.0.0.1:9000/v1"
api_key_env = "CHEAP_KEY"
region = "us"
"""

MODELS = """
[models."openai/gpt-4o"]
providers = ["openai", "openai-eu"]
upstream_model = "gpt-4o-2024-08-06"
prompt_price_per_million = "2.50"
completion_price_per_million = "10.00"
max_output_tokens = 16384

[models."openai/gpt-4o-mini"]
provider = "openai"
prompt_price_per_million = 0.15
completion_price_per_million = "0.60"
max_output_tokens = 16384

[models."meta/llama-3.1-8b"]
providers = ["cheap"]
prompt_price_per_million = "0.05"
completion_price_per_million = 0
max_output_tokens = 4096

[models."acme/twin"]
providers = ["cheap"]
prompt_price_per_million = "0.05"
completion_price_per_million = "0"
max_output_tokens = 4096
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lowrouter.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def catalogue(tmp_path: Path) -> Catalogue:
    return load_catalogue(write(tmp_path, PROVIDERS + MODELS), ENV)


def config_error(tmp_path: Path, text: str, environ: dict[str, str] = ENV) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_catalogue(path, environ)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message


def hold(entry: ModelEntry, prompt_tokens: int, max_tokens: int | None) -> int:
    return hold_for(entry.prices, prompt_tokens, output_cap(max_tokens, entry.max_output_tokens))


def pairs(result: list[tuple[ModelEntry, Provider]]) -> list[tuple[str, str]]:
    return [(model.id, provider.name) for model, provider in result]


# --- loading -------------------------------------------------------------------------------------


def test_a_valid_file_loads_providers_and_models_in_file_order(catalogue: Catalogue) -> None:
    assert list(catalogue.providers) == ["openai", "openai-eu", "cheap"]
    assert list(catalogue.models) == [
        "openai/gpt-4o",
        "openai/gpt-4o-mini",
        "meta/llama-3.1-8b",
        "acme/twin",
    ]
    openai = catalogue.providers["openai"]
    assert openai == Provider(
        "openai", "https://api.openai.com/v1", "OPENAI_API_KEY", "us", "sk-us"
    )


def test_prices_become_micro_credits_per_million_from_strings_and_numbers(
    catalogue: Catalogue,
) -> None:
    gpt4o = catalogue.models["openai/gpt-4o"]
    assert (gpt4o.prompt_price, gpt4o.completion_price) == (2_500_000, 10_000_000)
    mini = catalogue.models["openai/gpt-4o-mini"]
    assert (mini.prompt_price, mini.completion_price) == (150_000, 600_000)
    assert catalogue.models["meta/llama-3.1-8b"].completion_price == 0


def test_single_provider_and_default_upstream_model_after_the_first_slash(
    catalogue: Catalogue,
) -> None:
    mini = catalogue.models["openai/gpt-4o-mini"]
    assert mini.providers == ("openai",)
    assert mini.upstream_model == "gpt-4o-mini"
    assert catalogue.models["openai/gpt-4o"].upstream_model == "gpt-4o-2024-08-06"
    assert mini.demo is False


def test_model_name_with_several_slashes_keeps_the_rest_as_upstream_model(tmp_path: Path) -> None:
    text = PROVIDERS + MODELS.replace('"acme/twin"', '"openrouter/anthropic/claude-3.5"')
    catalogue = load_catalogue(write(tmp_path, text), ENV)
    assert (
        catalogue.models["openrouter/anthropic/claude-3.5"].upstream_model == "anthropic/claude-3.5"
    )


def test_provider_without_api_key_env_needs_no_credential(tmp_path: Path) -> None:
    text = PROVIDERS.replace('api_key_env = "CHEAP_KEY"\n', "") + MODELS
    catalogue = load_catalogue(write(tmp_path, text), ENV)
    assert catalogue.providers["cheap"].api_key is None
    assert catalogue.providers["cheap"].api_key_env == ""


def test_the_api_key_is_not_shown_in_the_providers_repr(catalogue: Catalogue) -> None:
    assert "sk-us" not in repr(catalogue.providers["openai"])


# --- every configuration error is one line naming file, entry and problem ---------------------


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read the file: No such file"):
        load_catalogue(path, ENV)


def test_toml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    message = config_error(tmp_path, PROVIDERS + '\n[models."x/y"]\nprompt_price = \n')
    assert "TOML syntax error" in message
    assert "line 18" in message


def test_unknown_provider_in_a_model(tmp_path: Path) -> None:
    text = PROVIDERS + MODELS.replace('provider = "openai"', 'provider = "opnai"')
    message = config_error(tmp_path, text)
    assert message.startswith(
        f'{tmp_path / "lowrouter.toml"}: models."openai/gpt-4o-mini": unknown provider "opnai"'
    )
    assert "defined providers: openai, openai-eu, cheap" in message


def test_missing_price(tmp_path: Path) -> None:
    text = PROVIDERS + MODELS.replace('completion_price_per_million = "10.00"\n', "")
    message = config_error(tmp_path, text)
    assert 'models."openai/gpt-4o": missing field "completion_price_per_million"' in message


@pytest.mark.parametrize("bad", ['"two fifty"', "true", "[1]", '"0.0000001"', '"nan"'])
def test_bad_price(tmp_path: Path, bad: str) -> None:
    text = PROVIDERS + MODELS.replace(
        'prompt_price_per_million = "2.50"', f"prompt_price_per_million = {bad}"
    )
    message = config_error(tmp_path, text)
    assert 'models."openai/gpt-4o": prompt_price_per_million' in message


@pytest.mark.parametrize("bad", ['"-2.50"', "-1", "-0.5"])
def test_negative_price(tmp_path: Path, bad: str) -> None:
    text = PROVIDERS + MODELS.replace(
        'prompt_price_per_million = "2.50"', f"prompt_price_per_million = {bad}"
    )
    message = config_error(tmp_path, text)
    assert 'models."openai/gpt-4o": prompt_price_per_million cannot be negative' in message


@pytest.mark.parametrize("field", ["base_url", "region"])
def test_missing_provider_field(tmp_path: Path, field: str) -> None:
    lines = [line for line in PROVIDERS.splitlines() if not line.startswith(field)]
    message = config_error(tmp_path, "\n".join(lines) + MODELS)
    assert f'providers."openai": missing field "{field}"' in message


def test_missing_providers_of_a_model(tmp_path: Path) -> None:
    text = PROVIDERS + MODELS.replace('providers = ["openai", "openai-eu"]\n', "")
    message = config_error(tmp_path, text)
    assert 'models."openai/gpt-4o": missing field "providers"' in message


@pytest.mark.parametrize(
    "bad", ["", "max_output_tokens = 0", "max_output_tokens = 1.5", 'max_output_tokens = "10"']
)
def test_missing_or_bad_max_output_tokens(tmp_path: Path, bad: str) -> None:
    text = PROVIDERS + MODELS.replace("max_output_tokens = 16384", bad, 1)
    message = config_error(tmp_path, text)
    assert 'models."openai/gpt-4o": ' in message
    assert "max_output_tokens" in message


def test_unknown_provider_field_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    text = (
        PROVIDERS.replace('base_url = "https://api.openai.com', 'base_ur = "https://api.openai.com')
        + MODELS
    )
    message = config_error(tmp_path, text)
    assert 'providers."openai": unknown field "base_ur"' in message
    assert 'did you mean "base_url"?' in message


def test_unknown_model_field_is_refused(tmp_path: Path) -> None:
    text = PROVIDERS + MODELS.replace("max_output_tokens = 4096", "max_output_token = 4096", 1)
    message = config_error(tmp_path, text)
    assert 'models."meta/llama-3.1-8b": unknown field "max_output_token"' in message


def test_unknown_top_level_table_is_refused(tmp_path: Path) -> None:
    message = config_error(tmp_path, PROVIDERS + MODELS + '\n[modles."a/b"]\nx = 1\n')
    assert 'unknown field "modles"' in message


@pytest.mark.parametrize(
    "url", ["api.openai.com/v1", "ftp://api.openai.com/v1", "https://", "https://host/v 1"]
)
def test_base_url_must_be_http_or_https(tmp_path: Path, url: str) -> None:
    text = PROVIDERS.replace("https://api.openai.com/v1/", url) + MODELS
    message = config_error(tmp_path, text)
    assert 'providers."openai": base_url' in message
    assert "http:// or https://" in message


def test_unset_api_key_variable_names_the_variable(tmp_path: Path) -> None:
    environ = {key: value for key, value in ENV.items() if key != "OPENAI_API_KEY"}
    message = config_error(tmp_path, PROVIDERS + MODELS, environ)
    assert message.endswith('providers."openai": environment variable OPENAI_API_KEY is not set')


def test_empty_api_key_variable_is_refused(tmp_path: Path) -> None:
    message = config_error(tmp_path, PROVIDERS + MODELS, ENV | {"OPENAI_EU_API_KEY": " "})
    assert 'providers."openai-eu": environment variable OPENAI_EU_API_KEY is empty' in message


@pytest.mark.parametrize("model_id", ["gpt-4o", "/gpt-4o", "openai/", "open ai/gpt", "a/b c"])
def test_model_id_must_be_vendor_slash_name(tmp_path: Path, model_id: str) -> None:
    text = PROVIDERS + MODELS.replace('"openai/gpt-4o-mini"', f'"{model_id}"')
    message = config_error(tmp_path, text)
    assert f'models."{model_id}": a model id has the form vendor/name' in message


def test_lowrouter_auto_is_reserved(tmp_path: Path) -> None:
    text = PROVIDERS + MODELS.replace('"openai/gpt-4o-mini"', f'"{AUTO_MODEL}"')
    message = config_error(tmp_path, text)
    assert 'models."lowrouter/auto": "lowrouter/auto" is reserved' in message


def test_a_file_without_models_is_refused(tmp_path: Path) -> None:
    message = config_error(tmp_path, PROVIDERS)
    assert "no models defined" in message


@pytest.mark.parametrize("name", ["OpenAI", "open ai", "-openai"])
def test_provider_names_are_lowercase(tmp_path: Path, name: str) -> None:
    message = config_error(tmp_path, PROVIDERS.replace('"cheap"', f'"{name}"', 1) + MODELS)
    assert f'providers."{name}": a provider name has lowercase letters' in message


def test_regions_are_lowercase(tmp_path: Path) -> None:
    message = config_error(tmp_path, PROVIDERS.replace('region = "eu"', 'region = "EU"') + MODELS)
    assert 'providers."openai-eu": region "EU" must be lowercase' in message


def test_a_provider_listed_twice_is_refused(tmp_path: Path) -> None:
    text = PROVIDERS + MODELS.replace('["openai", "openai-eu"]', '["openai", "openai"]')
    message = config_error(tmp_path, text)
    assert 'models."openai/gpt-4o": providers lists a provider twice' in message


def test_provider_and_providers_together_are_refused(tmp_path: Path) -> None:
    text = PROVIDERS + MODELS.replace(
        'provider = "openai"', 'provider = "openai"\nproviders = ["cheap"]'
    )
    message = config_error(tmp_path, text)
    assert "either provider or providers" in message


def test_a_name_with_a_newline_still_gives_one_line(tmp_path: Path) -> None:
    text = PROVIDERS + MODELS.replace('provider = "openai"', 'provider = "op\\nenai"')
    message = config_error(tmp_path, text)
    assert 'unknown provider "op\\nenai"' in message


# --- routing -------------------------------------------------------------------------------------


def test_explicit_model_gives_its_providers_in_config_order(catalogue: Catalogue) -> None:
    result = catalogue.candidates("openai/gpt-4o", Scope())
    assert pairs(result) == [("openai/gpt-4o", "openai"), ("openai/gpt-4o", "openai-eu")]


def test_explicit_model_is_filtered_by_the_keys_region(catalogue: Catalogue) -> None:
    result = catalogue.candidates("openai/gpt-4o", Scope(region="eu"))
    assert pairs(result) == [("openai/gpt-4o", "openai-eu")]


def test_unknown_model_lists_some_available_ids(catalogue: Catalogue) -> None:
    with pytest.raises(ModelNotFound) as caught:
        catalogue.candidates("openai/gpt-5", Scope())
    message = str(caught.value)
    assert '"openai/gpt-5" does not exist' in message
    assert '"openai/gpt-4o-mini"' in message


def test_unknown_model_lists_only_ids_the_key_may_use(catalogue: Catalogue) -> None:
    with pytest.raises(ModelNotFound) as caught:
        catalogue.candidates("openai/gpt-5", Scope(models=("meta/llama-3.1-8b",)))
    assert '"meta/llama-3.1-8b"' in str(caught.value)
    assert '"openai/gpt-4o"' not in str(caught.value)


def test_model_outside_the_scope_is_not_allowed(catalogue: Catalogue) -> None:
    with pytest.raises(ModelNotAllowed, match=r'"openai/gpt-4o" is outside this key\'s scope'):
        catalogue.candidates("openai/gpt-4o", Scope(models=("openai/gpt-4o-mini",)))


def test_model_without_a_provider_in_the_pinned_region_is_unavailable(
    catalogue: Catalogue,
) -> None:
    with pytest.raises(RegionUnavailable) as caught:
        catalogue.candidates("openai/gpt-4o-mini", Scope(region="eu"))
    assert 'no provider in region "eu"' in str(caught.value)


def test_auto_orders_allowed_models_cheapest_first_with_ties_by_id(catalogue: Catalogue) -> None:
    result = catalogue.candidates(AUTO_MODEL, Scope())
    assert pairs(result) == [
        ("acme/twin", "cheap"),
        ("meta/llama-3.1-8b", "cheap"),
        ("openai/gpt-4o-mini", "openai"),
        ("openai/gpt-4o", "openai"),
        ("openai/gpt-4o", "openai-eu"),
    ]


def test_auto_keeps_only_scope_models_in_the_keys_region(catalogue: Catalogue) -> None:
    scope = Scope(models=("openai/gpt-4o", "openai/gpt-4o-mini"), region="eu")
    assert pairs(catalogue.candidates(AUTO_MODEL, scope)) == [("openai/gpt-4o", "openai-eu")]


def test_auto_with_nothing_usable_raises_no_model_available(catalogue: Catalogue) -> None:
    with pytest.raises(NoModelAvailable, match='in region "eu"'):
        catalogue.candidates(AUTO_MODEL, Scope(models=("meta/llama-3.1-8b",), region="eu"))


def test_allowed_models_are_scope_and_region_filtered(catalogue: Catalogue) -> None:
    assert [m.id for m in catalogue.allowed_models(Scope())] == list(catalogue.models)
    assert [m.id for m in catalogue.allowed_models(Scope(region="eu"))] == ["openai/gpt-4o"]
    scope = Scope(models=("acme/twin", "openai/gpt-4o"), region="us")
    assert [m.id for m in catalogue.allowed_models(scope)] == ["openai/gpt-4o", "acme/twin"]


# --- prices --------------------------------------------------------------------------------------


def test_cost_rounds_each_part_up_to_a_micro_credit(catalogue: Catalogue) -> None:
    gpt4o = catalogue.models["openai/gpt-4o"]  # 2.50 and 10.00 credits per million
    assert gpt4o.prices.cost(TokenCounts(1_000_000, 0)) == 2_500_000
    assert gpt4o.prices.cost(TokenCounts(1000, 500)) == 2_500 + 5_000
    assert gpt4o.prices.cost(TokenCounts(1, 1)) == 3 + 10  # 2.5 rounds up to 3
    assert gpt4o.prices.cost(TokenCounts(0, 0)) == 0


def test_max_cost_uses_max_tokens_when_given_even_above_the_cap(catalogue: Catalogue) -> None:
    llama = catalogue.models["meta/llama-3.1-8b"]  # 0.05 / 0, cap 4096
    gpt4o = catalogue.models["openai/gpt-4o"]  # cap 16384
    assert hold(gpt4o, 100, 10) == 250 + 100
    assert hold(gpt4o, 100, 20_000) == 250 + 200_000
    assert hold(llama, 1_000_000, 50) == 50_000


def test_max_cost_without_max_tokens_uses_the_output_cap(catalogue: Catalogue) -> None:
    gpt4o = catalogue.models["openai/gpt-4o"]
    assert hold(gpt4o, 100, None) == 250 + 163_840


def test_negative_token_counts_are_refused(catalogue: Catalogue) -> None:
    with pytest.raises(ValueError):
        catalogue.models["openai/gpt-4o"].prices.cost(TokenCounts(-1, 0))


# --- the demo catalogue --------------------------------------------------------------------------


def test_demo_catalogue_serves_lowrouter_echo_without_a_key() -> None:
    catalogue = demo_catalogue("http://127.0.0.1:8080/demo/v1/")
    provider = catalogue.providers["lowrouter-demo"]
    assert provider.base_url == "http://127.0.0.1:8080/demo/v1"
    assert (provider.region, provider.api_key_env, provider.api_key) == ("local", "", None)
    echo = catalogue.models["lowrouter/echo"]
    assert echo.demo is True
    assert (echo.prompt_price, echo.completion_price, echo.max_output_tokens) == (
        100_000,
        400_000,
        1024,
    )
    assert pairs(catalogue.candidates(AUTO_MODEL, Scope())) == [
        ("lowrouter/echo", "lowrouter-demo")
    ]
