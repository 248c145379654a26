"""Finding tokens (domain/token_scan.py): exactly the published regex's matches whose checksum
is right, and the regex in the README is the one the finder uses."""

import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from domain.token_scan import BODY_LENGTH, TOKEN_REGEX, find_tokens
from domain.tokens import ALPHABET, TokenFormatError, TokenKind, generate_token, parse_token

README = Path(__file__).resolve().parents[2] / "README.md"


def wrong_checksum(token: str) -> str:
    return token[:-1] + ("0" if token[-1] != "0" else "1")


def test_the_published_regex_is_in_the_readme_and_matches_our_tokens_exactly() -> None:
    assert BODY_LENGTH == 38 and f"{{{BODY_LENGTH}}}" in TOKEN_REGEX
    assert f"`{TOKEN_REGEX}`" in README.read_text()
    for kind in TokenKind:
        token = generate_token(kind).value
        assert re.fullmatch(TOKEN_REGEX, token)
        assert not re.fullmatch(TOKEN_REGEX, token + "x")


text_pieces = st.lists(
    st.one_of(
        st.sampled_from([" ", "\n", "_", "-", "=", "x", '"']),
        st.text(alphabet=ALPHABET, max_size=45),
        st.builds(lambda: generate_token(TokenKind.INFERENCE).value),
        st.builds(lambda: wrong_checksum(generate_token(TokenKind.MANAGEMENT).value)),
    ),
    max_size=12,
)


@given(text_pieces)
def test_the_finder_reports_exactly_the_published_regex_matches_with_a_valid_checksum(
    pieces: list[str],
) -> None:
    text = "".join(pieces)
    expected = []
    for match in re.finditer(TOKEN_REGEX, text):
        try:
            parse_token(match.group())
        except TokenFormatError:
            continue
        expected.append((match.start(), match.group()))
    found = [(f.offset, f.token.value) for f in find_tokens(text.encode())]
    assert found == expected
