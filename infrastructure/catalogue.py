"""Loading the provider and model catalogue: which models exist, who serves them, where, in which
dialect and at what price.

Loaded once from the TOML file named by `LOWROUTER_CONFIG` (see API.md, Configuration), or the
built-in demo catalogue when there is none. Prices are integer micro-credits per million tokens.
The routing and pricing rules themselves are pure domain rules (domain.routing, domain.pricing).
"""

import difflib
import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from domain.errors import InvalidAmount
from domain.money import parse_price_per_million
from domain.routing import (
    AUTO_MODEL,
    CAP_FIELDS,
    DIALECTS,
    MODEL_KINDS,
    ApiNotServed,
    Catalogue,
    ModelEntry,
    ModelNotAllowed,
    ModelNotFound,
    NoModelAvailable,
    Provider,
    RegionUnavailable,
    RoutingError,
    WrongModelKind,
)

__all__ = [  # the routing names this module has always offered
    "AUTO_MODEL",
    "ApiNotServed",
    "Catalogue",
    "ConfigError",
    "ModelEntry",
    "ModelNotAllowed",
    "ModelNotFound",
    "NoModelAvailable",
    "Provider",
    "RegionUnavailable",
    "RoutingError",
    "WrongModelKind",
    "demo_catalogue",
    "load_catalogue",
]

DEMO_PROVIDER = "lowrouter-demo"
DEMO_MODEL = "lowrouter/echo"
# The demo upstream is reached inside the gateway process (infrastructure.upstream), never over
# the network: this host name is reserved (RFC 2606) and only ever routed in-process.
DEMO_HOST = "lowrouter-demo.invalid"
DEMO_BASE_URL = f"http://{DEMO_HOST}/v1"
DEMO_EMBEDDING_MODEL = "lowrouter/echo-embedding"
MAX_OUTPUT_TOKENS_BOUND = 10_000_000

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]*/[A-Za-z0-9][A-Za-z0-9._:/@+-]*$")
_MAX_MODEL_ID = 128
_PROVIDER_FIELDS = frozenset(
    {"base_url", "api_key_env", "region", "api", "extra_fields", "output_cap_fields"}
)
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_EXTRA_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$|^tools\.[A-Za-z0-9_]{1,64}$")  # or a tool
_MODEL_FIELDS = frozenset(
    {
        "providers",
        "provider",
        "upstream_model",
        "kind",
        "prompt_price_per_million",
        "completion_price_per_million",
        "cached_prompt_price_per_million",
        "cache_write_price_per_million",
        "max_output_tokens",
    }
)
_TOP_LEVEL_FIELDS = frozenset({"providers", "models"})


class ConfigError(ValueError):
    """A catalogue problem, reported as one line naming the file, the entry and what is wrong."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


# --- the demo catalogue --------------------------------------------------------------------


def demo_catalogue(base_url: str = DEMO_BASE_URL) -> Catalogue:
    """With no configuration: the built-in demo upstream serving `lowrouter/echo` (and an echo
    embedding model) offline, reached in-process."""
    provider = Provider(
        name=DEMO_PROVIDER,
        base_url=base_url.rstrip("/"),
        api_key_env="",
        region="local",
        api_key=None,
    )
    model = ModelEntry(
        id=DEMO_MODEL,
        providers=(DEMO_PROVIDER,),
        upstream_model="echo",
        prompt_price=parse_price_per_million("0.10"),
        completion_price=parse_price_per_million("0.40"),
        max_output_tokens=1024,
        demo=True,
    )
    embedding = ModelEntry(
        id=DEMO_EMBEDDING_MODEL,
        providers=(DEMO_PROVIDER,),
        upstream_model="echo-embedding",
        prompt_price=parse_price_per_million("0.02"),
        completion_price=0,
        max_output_tokens=0,
        demo=True,
        kind="embedding",
    )
    return Catalogue(
        providers={provider.name: provider}, models={model.id: model, embedding.id: embedding}
    )


# --- loading the TOML file -----------------------------------------------------------------


def load_catalogue(path: Path, environ: Mapping[str, str]) -> Catalogue:
    """Read and check the catalogue file; any problem raises one-line `ConfigError`."""
    file = str(path)
    document = _read_toml(path)
    _check_fields(file, document, _TOP_LEVEL_FIELDS)
    providers = {
        name: _load_provider(file, name, table, environ)
        for name, table in _tables(file, "providers", document.get("providers", {}))
    }
    models = {
        model_id: _load_model(file, model_id, table, providers)
        for model_id, table in _tables(file, "models", document.get("models", {}))
    }
    if not models:
        raise ConfigError(f'{file}: no models defined (add a [models."vendor/name"] table)')
    return Catalogue(providers=providers, models=models)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the file: {error.strerror or error}") from None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: TOML syntax error: {error}") from None


def _tables(file: str, section: str, value: object) -> Iterable[tuple[str, dict[str, Any]]]:
    if not isinstance(value, dict):
        raise ConfigError(f'{file}: {section} must be tables like [{section}."NAME"]')
    for name, table in value.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{file}: {section}.{_q(name)}: expected a table of fields")
        yield name, table


def _load_provider(
    file: str, name: str, table: dict[str, Any], environ: Mapping[str, str]
) -> Provider:
    where = f"{file}: providers.{_q(name)}"
    if not _NAME.match(name):
        raise ConfigError(f"{where}: a provider name has lowercase letters, digits, '-', '.', '_'")
    _check_fields(where, table, _PROVIDER_FIELDS)
    base_url = _string(where, table, "base_url").rstrip("/")
    if not _is_http_url(base_url):
        raise ConfigError(f"{where}: base_url {_q(base_url)} must start with http:// or https://")
    region = _string(where, table, "region")
    if not _NAME.match(region):
        raise ConfigError(
            f"{where}: region {_q(region)} must be lowercase letters, digits, '-', '.', '_'"
        )
    api_key_env = _string(where, table, "api_key_env", default="")
    api = _choice(where, table, "api", DIALECTS)
    return Provider(
        name,
        base_url,
        api_key_env,
        region,
        _api_key(where, api_key_env, environ),
        api,
        extra_fields=frozenset(_names(where, table, "extra_fields", _EXTRA_FIELD)),
        cap_fields=_cap_fields(where, table),
    )


def _names(where: str, table: dict[str, Any], key: str, pattern: re.Pattern[str]) -> list[str]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(
        isinstance(n, str) and pattern.match(n) for n in value
    ):
        raise ConfigError(f"{where}: {key} must be a list of request field names")
    return value


def _cap_fields(where: str, table: dict[str, Any]) -> tuple[str, ...]:
    """Where a chat request's output cap is sent: both fields by default (an upstream may
    honour either); OpenAI's reasoning models take only "max_completion_tokens"."""
    if "output_cap_fields" not in table:
        return CAP_FIELDS
    names = _names(where, table, "output_cap_fields", _FIELD_NAME)
    if not names or not set(names) <= set(CAP_FIELDS) or len(set(names)) != len(names):
        raise ConfigError(
            f"{where}: output_cap_fields must list one or both of "
            f'"max_tokens" and "max_completion_tokens"'
        )
    return tuple(names)


def _api_key(where: str, api_key_env: str, environ: Mapping[str, str]) -> str | None:
    if not api_key_env:
        return None  # an upstream without credentials (a local vLLM, Ollama, llama.cpp)
    if not _ENV_NAME.match(api_key_env):
        raise ConfigError(f"{where}: api_key_env {_q(api_key_env)} is not a variable name")
    value = environ.get(api_key_env)
    if value is None:
        raise ConfigError(f"{where}: environment variable {api_key_env} is not set")
    if not value.strip():
        raise ConfigError(f"{where}: environment variable {api_key_env} is empty")
    return value.strip()


def _load_model(
    file: str, model_id: str, table: dict[str, Any], providers: Mapping[str, Provider]
) -> ModelEntry:
    where = f"{file}: models.{_q(model_id)}"
    _check_model_id(where, model_id)
    _check_fields(where, table, _MODEL_FIELDS)
    upstream_model = _string(where, table, "upstream_model", default=model_id.split("/", 1)[1])
    kind = _choice(where, table, "kind", MODEL_KINDS)
    chat = kind == "chat"  # an embedding model produces no tokens: no completion price or cap
    return ModelEntry(
        id=model_id,
        providers=_model_providers(where, table, providers),
        upstream_model=upstream_model,
        prompt_price=_price(where, table, "prompt_price_per_million"),
        completion_price=_price(where, table, "completion_price_per_million", required=chat),
        max_output_tokens=_max_output_tokens(where, table) if chat else 0,
        cached_prompt_price=_optional_price(where, table, "cached_prompt_price_per_million"),
        cache_write_price=_optional_price(where, table, "cache_write_price_per_million"),
        kind=kind,
    )


def _check_model_id(where: str, model_id: str) -> None:
    if model_id == AUTO_MODEL:
        raise ConfigError(f"{where}: {_q(AUTO_MODEL)} is reserved for automatic routing")
    if len(model_id) > _MAX_MODEL_ID or not _MODEL_ID.match(model_id):
        raise ConfigError(
            f"{where}: a model id has the form vendor/name "
            "(letters, digits and . _ : @ + - /, at most 128 characters)"
        )


def _model_providers(
    where: str, table: dict[str, Any], providers: Mapping[str, Provider]
) -> tuple[str, ...]:
    if "providers" in table and "provider" in table:
        raise ConfigError(f"{where}: give either provider or providers, not both")
    if "provider" in table:
        names: object = [_string(where, table, "provider")]
    elif "providers" in table:
        names = table["providers"]
    else:
        raise ConfigError(f'{where}: missing field "providers" (or "provider")')
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{where}: providers must be a non-empty list of provider names")
    for name in names:
        if name not in providers:
            known = ", ".join(providers) or "none"
            raise ConfigError(f"{where}: unknown provider {_q(name)} (defined providers: {known})")
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: providers lists a provider twice")
    return tuple(names)


def _optional_price(where: str, table: dict[str, Any], key: str) -> int | None:
    return _price(where, table, key) if key in table else None


def _choice(where: str, table: dict[str, Any], key: str, allowed: tuple[str, ...]) -> Any:
    """One of `allowed` (the first is the default)."""
    value = table.get(key, allowed[0])
    if value not in allowed:
        expected = " or ".join(_q(choice) for choice in allowed)
        raise ConfigError(f"{where}: {key} must be {expected} (got {_q(str(value))})")
    return value


def _price(where: str, table: dict[str, Any], key: str, required: bool = True) -> int:
    if key not in table:
        if not required:
            return 0
        raise ConfigError(f"{where}: missing field {_q(key)} (credits per million tokens)")
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(f'{where}: {key} must be a decimal string like "2.50" or a number')
    if _is_negative(value):
        raise ConfigError(f"{where}: {key} cannot be negative (got {value})")
    try:
        return parse_price_per_million(value)
    except InvalidAmount as error:
        raise ConfigError(f"{where}: {key}: {error}") from None


def _is_negative(value: str | int | float) -> bool:
    try:
        return Decimal(str(value).strip()) < 0
    except (InvalidOperation, ValueError):
        return False


def _max_output_tokens(where: str, table: dict[str, Any]) -> int:
    if "max_output_tokens" not in table:
        raise ConfigError(f'{where}: missing field "max_output_tokens" (the output token cap)')
    value = table["max_output_tokens"]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: max_output_tokens must be a whole number")
    if not 1 <= value <= MAX_OUTPUT_TOKENS_BOUND:
        raise ConfigError(
            f"{where}: max_output_tokens must be between 1 and {MAX_OUTPUT_TOKENS_BOUND}"
        )
    return value


# --- small checks ---------------------------------------------------------------------------


def _check_fields(where: str, table: Mapping[str, Any], allowed: frozenset[str]) -> None:
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f"; did you mean {_q(close[0])}?" if close else ""
            expected = ", ".join(sorted(allowed))
            raise ConfigError(f"{where}: unknown field {_q(key)} (expected: {expected}){hint}")


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a bad port raises here
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not re.search(r"\s", url)


_MISSING = object()


def _string(where: str, table: Mapping[str, Any], key: str, default: object = _MISSING) -> str:
    if key not in table:
        if isinstance(default, str):
            return default
        raise ConfigError(f"{where}: missing field {_q(key)}")
    value = table[key]
    if not isinstance(value, str) or (not value.strip() and key != "api_key_env"):
        raise ConfigError(f"{where}: {key} must be a non-empty string")
    return value.strip()


def _q(text: str) -> str:
    """Quote a name the way TOML and the messages show it: "openai/gpt-4o"."""
    return json.dumps(text, ensure_ascii=False)
