"""The provider and model catalogue: which models exist, who serves them, where, and at what price.

Loaded once from the TOML file named by `LOWROUTER_CONFIG` (see API.md, Configuration), or the
built-in demo catalogue when there is none. Prices are integer micro-credits per million tokens.
"""

import difflib
import json
import math
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from domain.errors import InvalidAmount
from domain.money import cost_of, parse_price_per_million
from domain.scope import Scope

AUTO_MODEL = "lowrouter/auto"
DEMO_PROVIDER = "lowrouter-demo"
DEMO_MODEL = "lowrouter/echo"
# The demo upstream is reached inside the gateway process (infrastructure.upstream), never over
# the network: this host name is reserved (RFC 2606) and only ever routed in-process.
DEMO_HOST = "lowrouter-demo.invalid"
DEMO_BASE_URL = f"http://{DEMO_HOST}/v1"
MAX_OUTPUT_TOKENS_BOUND = 10_000_000
IMAGE_PART_TOKENS = 1_700  # a generous flat estimate for an image (or other non-text) part

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]*/[A-Za-z0-9][A-Za-z0-9._:/@+-]*$")
_MAX_MODEL_ID = 128
_PROVIDER_FIELDS = frozenset({"base_url", "api_key_env", "region"})
_MODEL_FIELDS = frozenset(
    {
        "providers",
        "provider",
        "upstream_model",
        "prompt_price_per_million",
        "completion_price_per_million",
        "max_output_tokens",
    }
)
_TOP_LEVEL_FIELDS = frozenset({"providers", "models"})


class ConfigError(ValueError):
    """A catalogue problem, reported as one line naming the file, the entry and what is wrong."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class RoutingError(Exception):
    """A request's model cannot be served for this key (the gateway maps each to its answer)."""


class ModelNotFound(RoutingError, LookupError):
    """No such model, or not one this key's scope lists."""


class ModelNotAllowed(RoutingError):
    """The model exists but the key's scope does not allow it."""


class RegionUnavailable(RoutingError):
    """The model has no provider in the key's region."""


class NoModelAvailable(RoutingError):
    """lowrouter/auto found no model this key may use."""


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    base_url: str  # without a trailing "/", e.g. "https://api.openai.com/v1"
    api_key_env: str  # "" when the upstream needs no credential
    region: str
    api_key: str | None = field(default=None, repr=False)  # never printed


@dataclass(frozen=True, slots=True)
class ModelEntry:
    id: str
    providers: tuple[str, ...]
    upstream_model: str
    prompt_price: int  # micro-credits per million prompt tokens
    completion_price: int  # micro-credits per million completion tokens
    max_output_tokens: int
    demo: bool = False

    @property
    def price(self) -> int:
        """The ordering price for `lowrouter/auto`: prompt plus completion per million."""
        return self.prompt_price + self.completion_price


@dataclass(frozen=True)
class Catalogue:
    providers: dict[str, Provider]
    models: dict[str, ModelEntry]

    # --- routing ---------------------------------------------------------------------------

    def candidates(self, model_id: str, scope: Scope) -> list[tuple[ModelEntry, Provider]]:
        """The (model, provider) pairs to try, in order, for a request from a key with `scope`."""
        if model_id == AUTO_MODEL:
            return self._auto_candidates(scope)
        entry = self.models.get(model_id)
        if entry is None:
            raise ModelNotFound(self._not_found_message(model_id, scope))
        if not scope.allows_model(model_id):
            raise ModelNotAllowed(f"model {_q(model_id)} is outside this key's scope")
        pairs = self._providers_in_region(entry, scope.region)
        if not pairs:
            raise RegionUnavailable(
                f"model {_q(model_id)} has no provider in region {_q(scope.region or '')}, "
                "the region this key is pinned to"
            )
        return pairs

    def allowed_models(self, scope: Scope) -> list[ModelEntry]:
        """The models a key with `scope` may use (and reach in its region), in catalogue order."""
        return [
            entry
            for entry in self.models.values()
            if scope.allows_model(entry.id) and self._providers_in_region(entry, scope.region)
        ]

    def _auto_candidates(self, scope: Scope) -> list[tuple[ModelEntry, Provider]]:
        entries = sorted(self.allowed_models(scope), key=lambda entry: (entry.price, entry.id))
        pairs = [
            pair for entry in entries for pair in self._providers_in_region(entry, scope.region)
        ]
        if not pairs:
            where = f" in region {_q(scope.region)}" if scope.region else ""
            raise NoModelAvailable(f"{AUTO_MODEL} found no model this key may use{where}")
        return pairs

    def _providers_in_region(
        self, entry: ModelEntry, region: str | None
    ) -> list[tuple[ModelEntry, Provider]]:
        providers = (self.providers[name] for name in entry.providers)
        return [(entry, p) for p in providers if region is None or p.region == region]

    def _not_found_message(self, model_id: str, scope: Scope) -> str:
        available = [entry.id for entry in self.allowed_models(scope)]
        if not available:
            return f"model {_q(model_id)} does not exist, and no model is available to this key"
        shown = ", ".join(_q(model) for model in available[:5])
        more = f" and {len(available) - 5} more" if len(available) > 5 else ""
        return (
            f"model {_q(model_id)} does not exist; available: {shown}{more} "
            f"(or {_q(AUTO_MODEL)}; GET /models lists them)"
        )

    # --- prices ----------------------------------------------------------------------------

    @staticmethod
    def cost(entry: ModelEntry, prompt_tokens: int, completion_tokens: int) -> int:
        """Micro-credits for a completion's real usage (each part rounded up)."""
        _check_tokens(prompt_tokens, completion_tokens)
        return cost_of(prompt_tokens, entry.prompt_price) + cost_of(
            completion_tokens, entry.completion_price
        )

    @staticmethod
    def max_cost(entry: ModelEntry, prompt_tokens: int, max_tokens: int | None) -> int:
        """The hold for a request: the client's `max_tokens` if given (even above the model's
        cap: the hold must cover what may be produced), else the model's output cap."""
        completion = entry.max_output_tokens if max_tokens is None else max_tokens
        return Catalogue.cost(entry, prompt_tokens, completion)


def _check_tokens(*counts: int) -> None:
    if any(count < 0 for count in counts):
        raise ValueError("token counts cannot be negative")


# --- estimating prompt size ----------------------------------------------------------------


def estimate_prompt_tokens(body: Mapping[str, Any]) -> int:
    """A cheap, deliberately generous estimate of a chat request's prompt tokens (never zero).

    UTF-8 bytes / 3 of every text (a real tokenizer gives about 4 characters per token in
    English, and no fewer than one token per CJK character), plus 4 per message and 3 to prime
    the reply; a flat allowance per image or other non-text part; tool and schema definitions
    count as text.
    """
    messages = body.get("messages")
    messages = messages if isinstance(messages, list) else []
    text_bytes = 0
    tokens = 3 + 4 * len(messages)
    for message in messages:
        message_bytes, message_tokens = _message_size(message)
        text_bytes += message_bytes
        tokens += message_tokens
    for key in ("tools", "functions", "response_format"):
        if body.get(key) is not None:
            text_bytes += len(json.dumps(body[key], ensure_ascii=False).encode())
    return max(1, tokens + math.ceil(text_bytes / 3))


def _message_size(message: object) -> tuple[int, int]:
    """(text bytes, flat tokens) of one message."""
    if not isinstance(message, Mapping):
        return 0, 0
    text_bytes, flat_tokens = _content_size(message.get("content"))
    for key in ("name", "tool_call_id", "refusal"):
        if isinstance(message.get(key), str):
            text_bytes += len(message[key].encode())
    if message.get("tool_calls") is not None:
        text_bytes += len(json.dumps(message["tool_calls"], ensure_ascii=False).encode())
    return text_bytes, flat_tokens


def _content_size(content: object) -> tuple[int, int]:
    if isinstance(content, str):
        return len(content.encode()), 0
    if not isinstance(content, list):
        return 0, 0
    text_bytes = flat_tokens = 0
    for part in content:
        if isinstance(part, str):
            text_bytes += len(part.encode())
        elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
            text_bytes += len(part["text"].encode())
        else:
            flat_tokens += IMAGE_PART_TOKENS
    return text_bytes, flat_tokens


# --- the demo catalogue --------------------------------------------------------------------


def demo_catalogue(base_url: str = DEMO_BASE_URL) -> Catalogue:
    """With no configuration: the built-in demo upstream serving `lowrouter/echo` offline."""
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
    return Catalogue(providers={provider.name: provider}, models={model.id: model})


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
    return Provider(name, base_url, api_key_env, region, _api_key(where, api_key_env, environ))


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
    return ModelEntry(
        id=model_id,
        providers=_model_providers(where, table, providers),
        upstream_model=upstream_model,
        prompt_price=_price(where, table, "prompt_price_per_million"),
        completion_price=_price(where, table, "completion_price_per_million"),
        max_output_tokens=_max_output_tokens(where, table),
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


def _price(where: str, table: dict[str, Any], key: str) -> int:
    if key not in table:
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
