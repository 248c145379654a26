"""Prices and holds: each kind of token at its own price, and a hold that covers any usage
within the request's bounds."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.money import cost_of
from domain.pricing import (
    PriceSheet,
    TokenCounts,
    estimate_input_tokens,
    hold_for,
    output_cap,
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


def test_other_request_shapes_are_estimated_from_every_text() -> None:
    short = estimate_input_tokens("hi")
    assert short >= 1
    long = estimate_input_tokens(
        [{"role": "user", "content": [{"type": "text", "text": "x" * 300}]}]
    )
    assert long >= 100
    assert estimate_input_tokens({"type": "image", "source": {}}) > 1_000
