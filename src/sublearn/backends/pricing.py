"""What API tokens cost: a price table by model, and the cost of counted usage.

Usage is counted per model as ``{"input_tokens", "output_tokens", "training_tokens", ...}``
(see :func:`sublearn.backends.openai_api.empty_usage`); prices are USD per million tokens.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from pydantic import Field

from sublearn.config import Config

_PER = 1_000_000


class ModelPrice(Config):
    """USD per million tokens of one model."""

    input: float = Field(default=0.0, ge=0, description="Per million prompt tokens.")
    output: float = Field(default=0.0, ge=0, description="Per million generated tokens.")
    training: float = Field(
        default=0.0, ge=0, description="Per million training tokens (tokens × epochs)."
    )


def price_for(model: str, table: Mapping[str, ModelPrice]) -> ModelPrice | None:
    """The price of ``model``: its own entry, else its fine-tune base's.

    ``openai:ft:gpt-4.1-nano-2025-04-14:org:suffix:id`` is looked up as the whole name,
    then ``ft:gpt-4.1-nano-2025-04-14`` (the price of fine-tuned inference), then
    ``gpt-4.1-nano-2025-04-14``; a provider prefix is dropped first.
    """
    name = model.split(":", 1)[1] if model.startswith(("openai:", "vllm:")) else model
    candidates = [name]
    if name.startswith("ft:"):
        base = name.split(":")[1]
        candidates += [f"ft:{base}", base]
    for candidate in candidates:
        if candidate in table:
            return table[candidate]
    return None


def is_billed(model: str) -> bool:
    """Whether a model's usage costs money (an API model, not one's own vLLM server)."""
    return model.startswith("openai:")


def merge_usage(
    usages: Iterable[Mapping[str, Mapping[str, int | float]]],
) -> dict[str, dict[str, float]]:
    """Sum ``{model: {counter: n}}`` dicts counter by counter."""
    total: dict[str, dict[str, float]] = {}
    for usage in usages:
        for model, counts in usage.items():
            into = total.setdefault(model, {})
            for counter, n in counts.items():
                into[counter] = into.get(counter, 0) + n
    return total


def usage_cost(
    usage: Mapping[str, Mapping[str, int | float]], table: Mapping[str, ModelPrice]
) -> tuple[float, list[str]]:
    """The USD cost of ``{model: counts}`` usage, and the API models that have no price."""
    cost, unpriced = 0.0, []
    for model, counts in usage.items():
        price = price_for(model, table)
        if price is None:
            # Only API models bill; a model on one's own vLLM server costs no money.
            billed = any(counts.get(k, 0) for k in ("input_tokens", "output_tokens"))
            if is_billed(model) and (billed or counts.get("training_tokens", 0)):
                unpriced.append(model)
            continue
        cost += (
            counts.get("input_tokens", 0) * price.input
            + counts.get("output_tokens", 0) * price.output
            + counts.get("training_tokens", 0) * price.training
        ) / _PER
    return cost, unpriced


def usd(amount: float) -> str:
    """Dollars as people read them: cents from one cent up, two significant digits below.

    ``usd(12.5) == "$12.50"``, ``usd(0.001) == "$0.001"``, ``usd(0.000123) == "$0.00012"``:
    a small budget or cost never reads as ``$0.00``.
    """
    if amount == 0 or abs(amount) >= 0.01:
        return f"${amount:,.2f}"
    decimals = 1 - math.floor(math.log10(abs(amount)))
    return f"${amount:.{decimals}f}".rstrip("0")
