"""Prices by model, fine-tunes priced by their base, and what counts as unpriced."""

from __future__ import annotations

import pytest

from sublearn.backends.pricing import ModelPrice, merge_usage, price_for, usage_cost

NANO = "gpt-4.1-nano-2025-04-14"
TABLE = {
    NANO: ModelPrice(input=0.10, output=0.40, training=1.50),
    f"ft:{NANO}": ModelPrice(input=0.20, output=0.80),
}


def test_fine_tunes_are_priced_as_ft_base_then_base() -> None:
    assert price_for(f"openai:{NANO}", TABLE) == TABLE[NANO]
    assert price_for(f"openai:ft:{NANO}:org:owl:abc123", TABLE) == TABLE[f"ft:{NANO}"]
    only_base = {NANO: TABLE[NANO]}
    assert price_for(f"ft:{NANO}:org::x", only_base) == TABLE[NANO]
    assert price_for("openai:gpt-4o", TABLE) is None


def test_cost_sums_tokens_times_prices_per_million() -> None:
    usage = {
        f"openai:{NANO}": {"input_tokens": 2_000_000, "output_tokens": 1_000_000},
        f"openai:ft:{NANO}:o::1": {"input_tokens": 1_000_000, "training_tokens": 0},
        f"openai:{NANO}-job": {"training_tokens": 0},
    }
    cost, unpriced = usage_cost(usage, TABLE)
    assert cost == pytest.approx(2 * 0.10 + 0.40 + 0.20)
    assert unpriced == []  # no tokens, nothing to price


def test_only_api_models_without_a_price_are_reported() -> None:
    usage = {
        "openai:gpt-4o": {"input_tokens": 10},
        "vllm:Qwen/Qwen2.5-7B-Instruct": {"input_tokens": 10_000},
    }
    assert usage_cost(usage, TABLE) == (0.0, ["openai:gpt-4o"])


def test_merge_usage_adds_counter_by_counter() -> None:
    merged = merge_usage([{"m": {"requests": 2, "input_tokens": 5}}, {"m": {"requests": 1}}])
    assert merged == {"m": {"requests": 3, "input_tokens": 5}}


def test_small_amounts_keep_two_significant_digits() -> None:
    from sublearn.backends.pricing import usd

    assert usd(0.001) == "$0.001"  # a budget of a tenth of a cent is not "$0.00"
    assert usd(0.000123) == "$0.00012"
    assert usd(0) == "$0.00" and usd(12.5) == "$12.50" and usd(1234.567) == "$1,234.57"
