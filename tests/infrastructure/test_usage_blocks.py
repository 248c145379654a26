"""Reading upstream usage blocks into TokenCounts and writing ours back, per dialect
(infrastructure/dialects/usage.py), as plain functions: what a charge is computed from."""

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.bounds import MAX_TOKENS
from domain.pricing import TokenCounts
from infrastructure.dialects.usage import (
    anthropic_usage,
    anthropic_usage_block,
    openai_chat_usage,
    openai_chat_usage_block,
    openai_embeddings_usage,
    openai_responses_usage,
    reported_cost,
)

NOT_A_COUNT = [None, -1, 1.5, "3", True, [], {}]


def test_openai_chat_usage_keeps_the_cached_and_reasoning_details_inside_the_totals() -> None:
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 40,
        "prompt_tokens_details": {"cached_tokens": 30, "cache_write_tokens": 20},
        "completion_tokens_details": {"reasoning_tokens": 25},
    }
    assert openai_chat_usage(usage) == TokenCounts(100, 40, 30, 20, 25)


def test_openai_details_never_exceed_the_totals_they_are_part_of() -> None:
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 8, "cache_write_tokens": 8},
        "completion_tokens_details": {"reasoning_tokens": 50},
    }
    counts = openai_chat_usage(usage)
    assert counts == TokenCounts(10, 5, 8, 2, 5)
    assert counts is not None and counts.uncached_prompt_tokens == 0


@pytest.mark.parametrize("bad", NOT_A_COUNT)
def test_openai_chat_usage_without_two_well_formed_counts_is_unknown(bad: Any) -> None:
    assert openai_chat_usage({"prompt_tokens": bad, "completion_tokens": 1}) is None
    assert openai_chat_usage({"prompt_tokens": 1, "completion_tokens": bad}) is None
    assert openai_chat_usage(bad) is None


def test_malformed_details_count_as_none() -> None:
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": "30"}
    assert openai_chat_usage(usage) == TokenCounts(10, 5)


def test_openai_responses_usage_reads_input_and_output_tokens() -> None:
    usage = {
        "input_tokens": 50,
        "output_tokens": 20,
        "input_tokens_details": {"cached_tokens": 10},
        "output_tokens_details": {"reasoning_tokens": 7},
    }
    assert openai_responses_usage(usage) == TokenCounts(50, 20, 10, 0, 7)
    assert openai_responses_usage({"prompt_tokens": 50, "completion_tokens": 20}) is None


def test_embeddings_usage_is_prompt_tokens_or_else_total_tokens() -> None:
    assert openai_embeddings_usage({"prompt_tokens": 8, "total_tokens": 9}) == TokenCounts(8, 0)
    assert openai_embeddings_usage({"total_tokens": 9}) == TokenCounts(9, 0)
    assert openai_embeddings_usage({"total_tokens": -9}) is None
    assert openai_embeddings_usage([]) is None


def test_anthropic_usage_adds_cache_reads_and_writes_to_the_prompt() -> None:
    usage = {
        "input_tokens": 10,
        "output_tokens": 4,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 30,
    }
    counts = anthropic_usage(usage)
    assert counts == TokenCounts(140, 4, 100, 30)
    assert counts is not None and anthropic_usage_block(counts) == usage
    assert anthropic_usage({"input_tokens": 10}) is None


@given(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6))
def test_anthropic_counts_survive_the_trip_to_our_shape_and_back(
    uncached: int, output: int, reads: int, writes: int
) -> None:
    block = {
        "input_tokens": uncached,
        "output_tokens": output,
        "cache_read_input_tokens": reads,
        "cache_creation_input_tokens": writes,
    }
    counts = anthropic_usage(block)
    assert counts is not None and anthropic_usage_block(counts) == block


@given(st.integers(0, 10**6), st.integers(0, 10**6), st.data())
def test_openai_chat_counts_survive_the_trip_to_our_shape_and_back(
    prompt: int, completion: int, data: st.DataObject
) -> None:
    counts = TokenCounts(
        prompt,
        completion,
        cached_prompt_tokens=data.draw(st.integers(0, prompt)),
        reasoning_tokens=data.draw(st.integers(0, completion)),
    )
    block = openai_chat_usage_block(counts)
    assert block["total_tokens"] == prompt + completion
    assert openai_chat_usage(block) == counts


def test_a_count_beyond_the_bound_is_held_at_the_bound() -> None:
    counts = openai_chat_usage({"prompt_tokens": 10**30, "completion_tokens": 1})
    assert counts == TokenCounts(MAX_TOKENS, 1)


@pytest.mark.parametrize(
    ("cost", "digits"),
    [
        (0.0042, "0.0042"),
        (1, "1"),
        ("0.50", "0.5"),
        (0, "0"),
        ("1e-3", "0.001"),
        (2.5e-7, "0.00000025"),
    ],
)
def test_the_upstreams_own_cost_is_kept_as_the_digits_it_sent(cost: Any, digits: str) -> None:
    assert reported_cost({"cost": cost}) == digits


@pytest.mark.parametrize("cost", [-0.1, "NaN", "inf", "abc", True, None, [1], {"x": 1}])
def test_a_cost_that_is_not_a_finite_non_negative_number_is_not_reported(cost: Any) -> None:
    assert reported_cost({"cost": cost}) is None
    assert reported_cost(cost) is None
