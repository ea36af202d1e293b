"""The judge protocol: requests in, judgements out, the same for an LLM or a rule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class JudgeRequest:
    """What a judge reads.

    Attributes:
        question: the prompt the answer replies to (a user message, a coding task).
        answer: the text to judge.
    """

    question: str
    answer: str


@dataclass(frozen=True)
class Judgement:
    """A judge's verdict on one request.

    Attributes:
        score: 0-100 for a scoring rubric (None for a yes/no rubric, an escape, or an
            unparsable reply).
        probability: P(yes) for a yes/no rubric (None otherwise).
        label: an escape the rubric allows instead of a score (``CODE``, ``REFUSAL``), else
            None.
        raw: the judge's own reply (or the rule that fired), for the saved verdicts.
    """

    score: float | None = None
    probability: float | None = None
    label: str | None = None
    raw: str = ""


@runtime_checkable
class Judge(Protocol):
    """Anything that judges requests under a named rubric."""

    name: str

    def judge(self, requests: list[JudgeRequest], rubric: str) -> list[Judgement]:
        """One judgement per request, in order, under the rubric named ``rubric``."""
        ...
