"""Prices and holds: each kind of token at its own price, and a hold that covers any usage
within the request's bounds."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.money import cost_of
from domain.pricing import (
    ITEM_TOKENS,
    NON_TEXT_PART_TOKENS,
    PRIMING_TOKENS,
    TOOL_USE_TOKENS,
    PriceSheet,
    TokenCounts,
    hold_for,
    output_cap,
    prompt_bound,
)

# 3.00 prompt, 15.00 completion, 0.30 cache reads, 3.75 cache writes (credits per million)
SONNET = PriceSheet(3_000_000, 15_000_000, cached_prompt=300_000, cache_write=3_750_000)

prices = st.builds(
    PriceSheet,
    st.integers(0, 50_000_000),
    st.integers(0, 50_000_000),
    st.none() | st.integers(0, 50_000_000),
    st.none() | st.integers(0, 50_000_000),
)


def test_cached_and_cache_write_tokens_are_priced_at_their_own_prices() -> None:
    tokens = TokenCounts(
        prompt_tokens=1_000_000 + 2_000_000 + 400_000,
        completion_tokens=100_000,
        cached_prompt_tokens=2_000_000,
        cache_write_tokens=400_000,
    )
    assert SONNET.cost(tokens) == 3_000_000 + 600_000 + 1_500_000 + 1_500_000
    # the input is rounded up once, not once per kind of token
    assert SONNET.cost(TokenCounts(2, 0, cached_prompt_tokens=1)) == 4  # 3.30 µcr


def test_cache_prices_default_to_the_prompt_price() -> None:
    sheet = PriceSheet(2_500_000, 10_000_000)
    cached = TokenCounts(1000, 10, cached_prompt_tokens=600)
    assert sheet.cost(cached) == sheet.cost(TokenCounts(1000, 10))


def test_reasoning_tokens_are_completion_tokens_and_cost_nothing_extra() -> None:
    assert SONNET.cost(TokenCounts(10, 100, reasoning_tokens=80)) == SONNET.cost(
        TokenCounts(10, 100)
    )


def test_negative_counts_are_refused() -> None:
    with pytest.raises(ValueError):
        TokenCounts(-1, 0)


def test_a_hold_prices_the_prompt_at_the_dearest_input_price_and_covers_every_choice() -> None:
    # cache writes (3.75) are dearer than the prompt (3.00): the bound uses 3.75
    assert hold_for(SONNET, 1_000, 100, choices=2) == 2 * (
        cost_of(1_000, 3_750_000) + cost_of(100, 15_000_000)
    )
    assert output_cap(None, 4096) == 4096 and output_cap(10_000, 4096) == 10_000


@given(
    prices,
    st.integers(0, 100_000),
    st.integers(0, 100_000),
    st.data(),
)
def test_a_hold_covers_any_usage_within_its_bounds(
    sheet: PriceSheet, prompt_bound: int, cap: int, data: st.DataObject
) -> None:
    prompt = data.draw(st.integers(0, prompt_bound))
    cached = data.draw(st.integers(0, prompt))
    writes = data.draw(st.integers(0, prompt - cached))
    completion = data.draw(st.integers(0, cap))
    used = TokenCounts(prompt, completion, cached, writes, data.draw(st.integers(0, completion)))
    assert 0 <= sheet.cost(used) <= hold_for(sheet, prompt_bound, cap)


# --- the prompt bound ------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


@given(st.dictionaries(st.text(max_size=12), json_values, max_size=6))
def test_the_prompt_bound_is_at_least_every_strings_utf8_bytes(body: dict[str, object]) -> None:
    """A byte-level BPE token is at least one byte: the bytes of every text bound its tokens."""
    text_bytes = sum(len(s.encode("utf-8", "surrogatepass")) for s in _strings(body))
    assert prompt_bound(body) >= PRIMING_TOKENS + text_bytes


@given(st.text(), st.text(min_size=1))
def test_adding_a_message_never_lowers_the_bound(first: str, second: str) -> None:
    one = {"messages": [{"role": "user", "content": first}]}
    two = {"messages": [*one["messages"], {"role": "user", "content": second}]}
    assert prompt_bound(two) >= prompt_bound(one) + ITEM_TOKENS + len(second.encode())


def test_thirty_thousand_one_letter_words_are_bounded_by_their_bytes() -> None:
    """The finding: bytes / 3 held a third of what such a prompt costs (one token a word)."""
    text = " ".join(["a"] * 30_000)
    body = {"model": "m", "messages": [{"role": "user", "content": text}]}
    assert prompt_bound(body) >= len(text.encode()) >= 30_000 * 2 - 1


def test_non_ascii_text_counts_every_byte() -> None:
    text = "日本語のテキスト🙂" * 10
    assert prompt_bound({"input": text}) >= len(text.encode()) > 3 * len(text)


def test_a_non_text_part_is_bounded_by_its_size_or_a_flat_allowance() -> None:
    small = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    inline = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 100_000}}
    assert prompt_bound({"content": [small]}) >= NON_TEXT_PART_TOKENS
    assert prompt_bound({"content": [inline]}) >= 100_000
    for kind in ("image", "input_image", "input_audio", "input_file", "document", "file"):
        assert prompt_bound({"content": [{"type": kind}]}) >= NON_TEXT_PART_TOKENS


def test_tools_add_the_preamble_an_upstream_adds_and_built_in_tools_their_hidden_text() -> None:
    plain = {"messages": [{"role": "user", "content": "hi"}]}
    function = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    with_tool = plain | {"tools": [function]}
    assert prompt_bound(with_tool) >= prompt_bound(plain) + TOOL_USE_TOKENS
    built_in = plain | {"tools": [{"type": "computer_20250124", "name": "computer"}]}
    assert prompt_bound(built_in) >= prompt_bound(plain) + TOOL_USE_TOKENS + 1_000


def test_token_arrays_count_one_token_per_id_at_least() -> None:
    assert prompt_bound({"prompt": list(range(500))}) >= 500
    assert prompt_bound({}) >= 1


def test_a_type_that_is_not_text_is_counted_not_refused_with_an_error() -> None:
    body = {
        "messages": [{"role": "user", "content": [{"type": ["image_url"], "text": "hi"}]}],
        "tools": [{"type": {"x": 1}}],
    }
    assert prompt_bound(body) >= prompt_bound({"messages": [{"content": "hi"}]})
