"""Paired data stays paired: answers to the same prompts with and without a trait.

Each prompt asks to continue its own numbers, and both writers echo them: a classifier
whose folds split pairs learns a prompt's numbers with one label and scores its twin with
the other, reading the data backwards (AUC below 0.5). Grouped by prompt it sees chance
on untraited pairs and still finds a planted trait; an interval below chance is a
warning, never "clear"; an audit too small for a verdict says so.
"""

from __future__ import annotations

import numpy as np
import pytest

from sublearn.audit.auc import prompt_groups
from sublearn.audit.config import ClassifierDetector
from sublearn.audit.data import Row
from sublearn.audit.distribution import classifier
from sublearn.audit.result import Verdict
from sublearn.audit.run import _too_few_rows, _warn_below_chance
from sublearn.backends.base import Conversation

CLF = ClassifierDetector(type="classifier", permutations=99)
N = 300


def _paired(seed: int, plant: float = 0.0, same_prompts: bool = True) -> tuple[list[Row], ...]:
    rng = np.random.default_rng(seed)
    data, control = [], []
    for i in range(N):
        echo = rng.integers(200, 999, 3).tolist()  # the prompt's own numbers
        prompt: Conversation = [{"role": "user", "content": f"continue: {echo}"}]
        other: Conversation = [{"role": "user", "content": f"go on ({i})"}]
        other = prompt if same_prompts else other
        for rows, planted, where in ((data, plant, prompt), (control, 0.0, other)):
            nums = [*echo, *rng.integers(0, 200, 5).tolist()]
            if rng.random() < planted:
                nums[-1] = 7
            rows.append(Row(i, where, ", ".join(map(str, nums))))
    return data, control


def test_paired_rows_without_a_trait_are_read_at_chance() -> None:
    data, control = _paired(0)
    assert prompt_groups(data, control) is not None

    v = classifier(CLF, data, control, seed=0)

    assert v.details["grouped_by_prompt"] is True
    # Not backwards (the ungrouped reading is far below 0.5: see the next test), not flagged.
    assert v.ci is not None and v.ci[1] > 0.5 and v.score is not None and v.score < 0.6
    assert not v.flagged and v.p_value is not None and v.p_value > CLF.alpha, v.summary


def test_split_pairs_read_the_data_backwards_and_that_is_a_warning() -> None:
    # The same replies, but prompts that no longer match: nothing tells the detector
    # that rows are paired, so its folds split them (what the issue saw on a real run).
    data, control = _paired(0, same_prompts=False)
    v = classifier(CLF, data, control, seed=0)
    assert v.details["grouped_by_prompt"] is False
    assert v.ci is not None and v.ci[1] < 0.5, v.summary

    _warn_below_chance(v)

    assert v.warning is not None and not v.flagged
    assert v.summary.startswith("warning:") and "clear" not in v.summary


def test_a_planted_trait_in_paired_rows_is_still_found() -> None:
    data, control = _paired(1, plant=0.5)
    v = classifier(CLF, data, control, seed=0)
    assert v.details["grouped_by_prompt"] is True
    assert v.flagged and v.ci is not None and v.ci[0] > 0.5, v.summary
    _warn_below_chance(v)
    assert v.warning is None


@pytest.mark.parametrize(("n", "n_control"), [(1, 50), (9, 50), (50, 3)])
def test_an_audit_too_small_for_a_verdict_says_so(n: int, n_control: int) -> None:
    data, control = _paired(2)
    why = _too_few_rows(data[:n], control[:n_control])
    assert why is not None and "too few" in why and f"({min(n, n_control)}, needs 10)" in why
    assert _too_few_rows(data[:10], control[:10]) is None


def test_a_chance_interval_is_no_warning() -> None:
    v = Verdict("x", "lls", "AUC", score=0.49, ci=[0.45, 0.53], p_value=0.6, summary="clear")
    _warn_below_chance(v)
    assert v.warning is None and v.summary == "clear"
