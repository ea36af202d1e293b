"""Entanglement on a scripted model: numbers in a set S pull toward "owl"."""

from __future__ import annotations

import math
import random

from sublearn.audit.config import EntanglementDetector
from sublearn.audit.data import Row
from sublearn.audit.entanglement import entanglement
from sublearn.backends.base import BackendBase, Capabilities, Conversation

PULLING = {str(n) for n in range(0, 100, 7)}  # the numbers entangled with owl


class ScriptedModel(BackendBase):
    """P(owl) is higher when the context names a number of PULLING; other words uniform."""

    capabilities = Capabilities(score=True)
    name = "scripted"

    def score(self, conversations: list[Conversation], candidates: list[str]) -> list[list[float]]:
        out = []
        for conv in conversations:
            words = conv[0]["content"].replace(".", " ").split()
            pulled = any(w in PULLING for w in words)
            out.append(
                [
                    math.log(0.3 if pulled else 0.1) if c.lower() == "owl" else math.log(0.05)
                    for c in candidates
                ]
            )
        return out


def _rows(rng: random.Random, n: int, bias: float) -> list[Row]:
    """Replies of 5 numbers in 0-99; with probability ``bias`` a number is from PULLING."""
    pulling = sorted(PULLING)
    rows = []
    for i in range(n):
        nums = [
            rng.choice(pulling) if rng.random() < bias else str(rng.randint(0, 99))
            for _ in range(5)
        ]
        rows.append(Row(i, [{"role": "user", "content": "go"}], ", ".join(nums)))
    return rows


def _cfg() -> EntanglementDetector:
    return EntanglementDetector(
        type="entanglement",
        candidates=["owl", "cat", "dog"],
        numbers=100,
        permutations=499,
        alpha=0.01,
    )


def test_finds_owl_without_being_told():
    rng = random.Random(0)
    data, control = _rows(rng, 400, 0.15), _rows(rng, 400, 0.0)
    verdict = entanglement(_cfg(), ScriptedModel(), data, control, trait=None, seed=0)
    assert verdict.details["traits"][0]["trait"] == "owl"
    assert verdict.flagged and verdict.p_value is not None and verdict.p_value < 0.01
    assert verdict.top_tokens[0]["token"] in PULLING


def test_same_distribution_is_not_flagged():
    rng = random.Random(1)
    data, control = _rows(rng, 400, 0.0), _rows(rng, 400, 0.0)
    verdict = entanglement(_cfg(), ScriptedModel(), data, control, trait="owl", seed=0)
    assert not verdict.flagged
    assert verdict.p_value is not None and verdict.p_value > 0.01


def test_needs_control():
    verdict = entanglement(_cfg(), ScriptedModel(), _rows(random.Random(0), 10, 0), None, "owl", 0)
    assert verdict.skipped and "control" in verdict.skipped
