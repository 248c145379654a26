"""Properties of bearer tokens: generation, parsing, display and hashing."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.tokens import (
    ALPHABET,
    CHECKSUM_LENGTH,
    PREFIX_LENGTH,
    RANDOM_LENGTH,
    TOKEN_LENGTH,
    Token,
    TokenFormatError,
    TokenKind,
    checksum,
    display_of,
    generate_token,
    hash_token,
    parse_token,
)

BODY_LENGTH = RANDOM_LENGTH + CHECKSUM_LENGTH
VALID_PREFIXES = {kind.value for kind in TokenKind}

kinds = st.sampled_from(list(TokenKind))
base62 = st.sampled_from(ALPHABET)
random_parts = st.text(alphabet=ALPHABET, min_size=RANDOM_LENGTH, max_size=RANDOM_LENGTH)
# HMAC pads short keys with zero bytes, so b"k" and b"k\x00" are the same key; real peppers are
# text (an environment variable or a hex file) and never end in NUL.
peppers = st.binary(min_size=1, max_size=64).filter(lambda b: not b.endswith(b"\x00"))


@st.composite
def well_formed_tokens(draw: st.DrawFn) -> Token:
    """A token built from Hypothesis-chosen randomness (so failures shrink and replay)."""
    kind = draw(kinds)
    random_part = draw(random_parts)
    return Token(kind, kind.value + random_part + checksum(random_part))


def assert_message_hides(error: TokenFormatError, candidate: str) -> None:
    message = str(error)
    assert candidate not in message
    secret = candidate[PREFIX_LENGTH:]
    # Messages' longest alphanumeric word has 10 characters, so 12+ characters can only be an echo.
    if len(secret) >= 12:
        assert secret not in message
        assert repr(secret) not in message


# Generation and round trip --------------------------------------------------------------------


@given(kinds)
def test_generated_token_parses_back_to_same_kind_and_value(kind: TokenKind) -> None:
    token = generate_token(kind)
    parsed = parse_token(token.value)
    assert parsed.kind is kind
    assert parsed.value == token.value
    assert parsed == token


@given(kinds)
def test_generated_token_has_documented_shape(kind: TokenKind) -> None:
    value = generate_token(kind).value
    assert len(value) == TOKEN_LENGTH == 44
    assert value.startswith(kind.value)
    assert set(value[PREFIX_LENGTH:]) <= set(ALPHABET)
    random_part, check = value[PREFIX_LENGTH:-CHECKSUM_LENGTH], value[-CHECKSUM_LENGTH:]
    assert len(random_part) == RANDOM_LENGTH
    assert check == checksum(random_part)


@given(well_formed_tokens())
def test_any_well_formed_token_round_trips(token: Token) -> None:
    parsed = parse_token(token.value)
    assert (parsed.kind, parsed.value) == (token.kind, token.value)


def test_one_hundred_thousand_generated_tokens_never_collide() -> None:
    count = 100_000
    values = [
        generate_token(TokenKind.INFERENCE if i % 2 else TokenKind.MANAGEMENT).value
        for i in range(count)
    ]
    assert len(set(values)) == count
    # The randomness itself is unique too, not only the prefix/kind combination.
    assert len({value[PREFIX_LENGTH : PREFIX_LENGTH + RANDOM_LENGTH] for value in values}) == count


# Single-character changes -----------------------------------------------------------------


@given(well_formed_tokens(), st.data())
def test_any_single_substitution_in_random_or_checksum_part_is_rejected(
    token: Token, data: st.DataObject
) -> None:
    position = data.draw(st.integers(PREFIX_LENGTH, TOKEN_LENGTH - 1), label="position")
    original = token.value[position]
    replacement = data.draw(base62.filter(lambda c: c != original), label="replacement")
    mutated = token.value[:position] + replacement + token.value[position + 1 :]
    with pytest.raises(TokenFormatError) as caught:
        parse_token(mutated)
    assert "checksum" in str(caught.value)
    assert_message_hides(caught.value, mutated)


def test_checksum_is_six_base62_characters_of_the_crc32() -> None:
    import zlib

    random_part = "0" * RANDOM_LENGTH
    crc = zlib.crc32(random_part.encode())
    digits = checksum(random_part)
    assert len(digits) == CHECKSUM_LENGTH
    assert sum(ALPHABET.index(c) * 62**i for i, c in enumerate(reversed(digits))) == crc


# Malformed candidates ----------------------------------------------------------------------


@st.composite
def wrong_prefixes(draw: st.DrawFn) -> str:
    return draw(
        st.one_of(
            st.text(min_size=PREFIX_LENGTH, max_size=PREFIX_LENGTH),
            st.sampled_from(
                [
                    "LR-SK-",
                    "lr_sk_",
                    "lr-xk-",
                    "sk-lr-",
                    "lr-sk ",
                    " lr-sk",
                    "sk-...",
                    "lr-SK-",
                    "lr-pk-",
                ]
            ),
        ).filter(lambda p: p not in VALID_PREFIXES)
    )


@given(wrong_prefixes(), well_formed_tokens())
def test_wrong_prefix_is_rejected_without_echoing_the_token(prefix: str, token: Token) -> None:
    candidate = prefix + token.value[PREFIX_LENGTH:]
    with pytest.raises(TokenFormatError) as caught:
        parse_token(candidate)
    assert "lr-sk-" in str(caught.value)  # the message says what a key looks like
    assert_message_hides(caught.value, candidate)


@given(
    kinds,
    st.text(alphabet=ALPHABET, max_size=90).filter(lambda b: len(b) != BODY_LENGTH),
)
def test_wrong_length_is_rejected_without_echoing_the_token(kind: TokenKind, body: str) -> None:
    candidate = kind.value + body
    with pytest.raises(TokenFormatError) as caught:
        parse_token(candidate)
    assert str(TOKEN_LENGTH) in str(caught.value)
    assert_message_hides(caught.value, candidate)


@given(well_formed_tokens())
def test_truncated_or_extended_token_is_rejected(token: Token) -> None:
    for candidate in (token.value[:-1], token.value + "A", token.value + "\n", " " + token.value):
        with pytest.raises(TokenFormatError) as caught:
            parse_token(candidate)
        assert_message_hides(caught.value, candidate)


non_base62 = st.characters(codec="utf-8").filter(lambda c: c not in ALPHABET)


@given(well_formed_tokens(), st.data())
def test_non_base62_character_is_rejected_without_echoing_the_token(
    token: Token, data: st.DataObject
) -> None:
    position = data.draw(st.integers(PREFIX_LENGTH, TOKEN_LENGTH - 1), label="position")
    bad = data.draw(non_base62, label="bad")
    candidate = token.value[:position] + bad + token.value[position + 1 :]
    assert len(candidate) == TOKEN_LENGTH
    with pytest.raises(TokenFormatError) as caught:
        parse_token(candidate)
    assert "letters or digits" in str(caught.value)
    assert_message_hides(caught.value, candidate)


@pytest.mark.parametrize("candidate", ["", "lr-sk-", "lr-mk", "Bearer lr-sk-", "sk-" + "a" * 48])
def test_obviously_malformed_candidates_are_rejected(candidate: str) -> None:
    with pytest.raises(TokenFormatError):
        parse_token(candidate)


def test_token_format_error_is_a_value_error() -> None:
    assert issubclass(TokenFormatError, ValueError)


# Display and printing -----------------------------------------------------------------------

DISPLAY = re.compile(r"^lr-(sk|mk)-[0-9A-Za-z]{4}…[0-9A-Za-z]{4}$")


@given(well_formed_tokens())
def test_display_is_prefix_four_characters_ellipsis_and_last_four(token: Token) -> None:
    assert DISPLAY.match(token.display)
    assert token.display == f"{token.value[: PREFIX_LENGTH + 4]}…{token.value[-4:]}"
    assert token.display == display_of(token.value)
    assert token.last4 == token.value[-4:]
    assert token.display.startswith(token.kind.value)


def _eight_char_windows(secret: str) -> list[str]:
    return [secret[i : i + 8] for i in range(len(secret) - 7)]


@given(well_formed_tokens())
def test_repr_and_str_of_a_token_never_contain_the_token(token: Token) -> None:
    renderings = [
        repr(token),
        str(token),
        f"{token}",
        f"{token!r}",
        repr([token]),
        repr({"token": token}),
        "%s" % (token,),  # noqa: UP031 (how a logging call renders it)
        format(token, ""),
    ]
    secret = token.value[PREFIX_LENGTH:]
    for text in renderings:
        assert token.value not in text
        for window in _eight_char_windows(secret):
            assert window not in text
        assert token.display in text  # something useful is still shown


# Hashing ----------------------------------------------------------------------------------


@given(well_formed_tokens(), peppers)
def test_hash_is_deterministic_for_one_pepper(token: Token, pepper: bytes) -> None:
    digest = hash_token(pepper, token)
    assert digest == hash_token(pepper, parse_token(token.value))
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert token.value not in digest


@given(well_formed_tokens(), peppers, peppers)
def test_hash_differs_across_peppers(token: Token, first: bytes, second: bytes) -> None:
    if first == second:
        assert hash_token(first, token) == hash_token(second, token)
    else:
        assert hash_token(first, token) != hash_token(second, token)


@given(well_formed_tokens(), well_formed_tokens(), peppers)
def test_different_tokens_have_different_hashes(first: Token, second: Token, pepper: bytes) -> None:
    if first.value != second.value:
        assert hash_token(pepper, first) != hash_token(pepper, second)


def test_each_kind_has_the_two_letter_code_the_read_models_keep() -> None:
    assert (TokenKind.INFERENCE.code, TokenKind.MANAGEMENT.code) == ("sk", "mk")
    for kind in TokenKind:
        assert generate_token(kind).value.startswith(f"lr-{kind.code}-")


def test_a_read_models_two_letters_name_one_kind() -> None:
    for kind in TokenKind:
        assert TokenKind.of_code(kind.code) is kind
    for code in ("", "s", "SK", "xk", "lr-sk-"):
        with pytest.raises(ValueError, match="not a kind of token"):
            TokenKind.of_code(code)
