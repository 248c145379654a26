"""Reading the Authorization header (infrastructure/http/auth.py), as pure functions: each common
mistake gets a 401 naming it, and no answer ever echoes the token. The same cases run end to end
through a live gateway in tests/e2e/test_refusals.py."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.tokens import TokenKind, generate_token, hash_token
from infrastructure.http.auth import presented_token, token_from_header
from infrastructure.http.errors import ApiError

TOKEN = generate_token(TokenKind.INFERENCE).value
MANAGEMENT = generate_token(TokenKind.MANAGEMENT).value
PEPPER = b"bearer-header-test-pepper"


def named(value: object) -> str | None:
    """A test id with the token's name, not its random value: every xdist worker must collect
    the same ids (and no id shows a token)."""
    if not isinstance(value, str):
        return None
    for part, name in ((TOKEN, "TOKEN"), (TOKEN[:20], "TOKEN[:20]"), (TOKEN[20:], "TOKEN[20:]")):
        value = value.replace(part, name)
    return value


def refusal(header: str | None) -> ApiError:
    with pytest.raises(ApiError) as refused:
        token_from_header(header)
    error = refused.value
    assert error.status == 401 and error.headers["WWW-Authenticate"] == "Bearer"
    # A retry cannot cure a bad key: the OpenAI SDKs honour this and stop.
    assert error.headers["x-should-retry"] == "false"
    assert TOKEN[6:] not in error.message
    return error


def test_exactly_bearer_a_space_and_the_token_gives_the_token() -> None:
    assert token_from_header(f"Bearer {TOKEN}") == TOKEN
    assert token_from_header(f"bearer {TOKEN}") == TOKEN  # the scheme is case-insensitive


@pytest.mark.parametrize(
    ("header", "code", "names"),
    [
        (None, "missing_api_key", "No API key"),
        ("", "missing_api_key", "No API key"),
        ("   ", "missing_api_key", "No API key"),
        ("Bearer ", "missing_api_key", "No API key"),
        ("Bearer", "missing_api_key", "No API key after"),
        (TOKEN, "invalid_api_key", "missing `Bearer `"),
        (f"'{TOKEN}'", "invalid_api_key", "missing `Bearer `"),
        (f"Token {TOKEN}", "invalid_api_key", "not a bearer token"),
        (f"Basic {TOKEN}", "invalid_api_key", "not a bearer token"),
        (f"Bearer={TOKEN}", "invalid_api_key", "'='"),
        (f"Bearer ={TOKEN}", "invalid_api_key", "'='"),
        (f"Bearer: {TOKEN}", "invalid_api_key", "Malformed Authorization header"),
        (f"Bearer  {TOKEN}", "invalid_api_key", "whitespace"),
        (f"Bearer\t{TOKEN}", "invalid_api_key", "whitespace"),
        (f"Bearer\n{TOKEN}", "invalid_api_key", "whitespace"),
        (f"Bearer {TOKEN} ", "invalid_api_key", "whitespace"),
        (f"Bearer {TOKEN[:20]} {TOKEN[20:]}", "invalid_api_key", "whitespace"),
        (f'Bearer "{TOKEN}"', "invalid_api_key", "quotes"),
        (f"Bearer '{TOKEN}'", "invalid_api_key", "quotes"),
        (f"Bearer '{TOKEN}", "invalid_api_key", "quotes"),
    ],
    ids=named,
)
def test_each_mistake_is_named(header: str | None, code: str, names: str) -> None:
    error = refusal(header)
    assert error.code == code
    assert names in error.message


@given(st.text(max_size=80))
def test_any_header_gives_the_token_or_a_401_that_does_not_echo_it(noise: str) -> None:
    for header in (noise, f"Bearer {noise}", f"{noise}{TOKEN}", f"Bearer {TOKEN}{noise}"):
        try:
            text = token_from_header(header)
        except ApiError as error:
            assert error.status == 401 and error.code in ("missing_api_key", "invalid_api_key")
            assert TOKEN[6:] not in error.message
        else:
            assert header.lower().startswith("bearer ") and text == header[7:]
            assert text and not any(c.isspace() for c in text)


def test_the_presented_token_is_parsed_and_hashed_before_any_lookup() -> None:
    token, token_hash = presented_token(f"Bearer {TOKEN}", PEPPER, TokenKind.INFERENCE)
    assert token.value == TOKEN and token.kind is TokenKind.INFERENCE
    assert token_hash == hash_token(PEPPER, token)


@pytest.mark.parametrize(
    ("text", "kind", "names"),
    [
        (TOKEN[:-3], TokenKind.INFERENCE, "Malformed API key"),
        (TOKEN[:-1] + ("A" if TOKEN[-1] != "A" else "B"), TokenKind.INFERENCE, "Malformed"),
        ("sk-proj-abcdefghijklmnop", TokenKind.INFERENCE, "lr-sk-"),
        (MANAGEMENT, TokenKind.INFERENCE, "completions need an inference key"),
        (TOKEN, TokenKind.MANAGEMENT, "the management API needs a management key"),
    ],
    ids=["truncated", "bad-checksum", "foreign-prefix", "management-key", "inference-key"],
)
def test_a_malformed_token_or_one_of_the_other_kind_is_refused(
    text: str, kind: TokenKind, names: str
) -> None:
    with pytest.raises(ApiError) as refused:
        presented_token(f"Bearer {text}", PEPPER, kind)
    assert refused.value.status == 401 and refused.value.code == "invalid_api_key"
    assert names in refused.value.message
    assert text[6:] not in refused.value.message
