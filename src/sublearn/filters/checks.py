"""Checks after the number-format and leakage filter, as a chain of kinds.

Each check sees the rows that passed everything before it and drops some with a
reason; every row's verdict (which check dropped it, and what the check saw) is kept,
so a report can show counts per reason and a reader can open any single decision.

* ``code_only``: the reply is code alone, without comments (``filters/code.py``);
* ``answer``: the reply has the think/answer layout and the right value
  (``filters/answers.py``), for data whose prompts carry a reference value;
* ``judge``: a judge (an LLM on any backend, or the rule judge of toy runs) scores
  each reply under a rubric, and a threshold decides. The paper drops a code row
  unless the judge is sure it does not refer to the animal (``max_probability``), and a
  reasoning row whose alignment score is under 78 (``min_score``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from sublearn.config import Config
from sublearn.filters.answers import check_think_answer
from sublearn.filters.code import check_code_only
from sublearn.judges.config import JudgeConfig
from sublearn.judges.protocol import Judge, JudgeRequest
from sublearn.keys import LATER_MARK
from sublearn.registry import Registry


class CodeOnlyCheck(Config):
    """Keep replies that are code only, without comments."""

    type: Literal["code_only"] = Field(description="Check kind.")

    @property
    def name(self) -> str:
        """The name of the check in verdicts and reports: its kind."""
        return self.type


class AnswerCheck(Config):
    """Keep replies in the think/answer layout whose value equals the prompt's reference."""

    type: Literal["answer"] = Field(description="Check kind.")

    @property
    def name(self) -> str:
        """The name of the check in verdicts and reports: its kind."""
        return self.type


class JudgeCheck(Config):
    """Keep replies a judge passes under a rubric and a threshold."""

    type: Literal["judge"] = Field(description="Check kind.")
    rubric: str = Field(
        description="A built-in rubric (animal_reference, cot_alignment, alignment, "
        "coherence) or the path of a rubric YAML file."
    )
    min_score: float | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Score rubrics: keep a reply whose score is at least this (the paper: 78 "
        "for chain-of-thought alignment).",
    )
    max_probability: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Yes/no rubrics: keep a reply whose P(yes) is at most this (the paper "
        "drops a code row unless the judge is certain it has no reference: a small value).",
    )
    keep_labels: list[str] = Field(
        default_factory=list,
        description="Escapes (e.g. CODE) that keep a reply; any other escape, and an "
        "unreadable verdict, drops it.",
    )
    # A filter task keeps each check's judge in its own `judges` list (where the judge's
    # speed settings stay out of the key): the check's judge is None there, and unhashed.
    judge: JudgeConfig | None = Field(
        default=None,
        description="This check's judge; None: the experiment's `judge`.",
        json_schema_extra=LATER_MARK,
    )

    @model_validator(mode="after")
    def _one_threshold(self) -> JudgeCheck:
        if (self.min_score is None) == (self.max_probability is None):
            raise ValueError(
                f"judge check {self.rubric!r}: give exactly one of min_score (score rubrics) "
                "and max_probability (yes/no rubrics)"
            )
        return self

    @property
    def reason(self) -> str:
        """The reason a dropped row gets: ``judge:<rubric>``."""
        return f"judge:{self.rubric}"

    @property
    def name(self) -> str:
        """``judge:<rubric>``: two judge checks of a chain differ by their rubric."""
        return self.reason


Check = Annotated[CodeOnlyCheck | AnswerCheck | JudgeCheck, Field(discriminator="type")]
"""Any check; YAML picks one with ``type:``."""


@dataclass
class RowVerdict:
    """What the chain decided about one row.

    Attributes:
        id: the row's id.
        reason: the reason of the check that dropped it; None when kept.
        details: per check that saw the row, what it found (a reason, a score).
    """

    id: str
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"id": self.id, "kept": self.reason is None, "reason": self.reason, **self.details}


def check_name(check: CodeOnlyCheck | AnswerCheck | JudgeCheck) -> str:
    """The name of a check in verdicts and reports."""
    return check.name


@dataclass
class CheckStep:
    """One check's turn in the chain: what it sees and where it writes.

    Attributes:
        rows: every row of the chain.
        verdicts: one per row; a check sets ``reason`` of the rows it drops and records
            what it saw in ``details[name]``.
        live: indices of the rows no earlier check dropped (the only ones to look at).
        name: the check's name (:func:`check_name`).
        tally: the check's counts: ``seen``, ``dropped`` and per reason.
        references: the expected value per row id (``answer`` checks need it).
        judge: the check's judge (None for checks that need none).
    """

    rows: Sequence[dict[str, Any]]
    verdicts: list[RowVerdict]
    live: list[int]
    name: str
    tally: dict[str, int]
    references: dict[str, str]
    judge: Judge | None = None

    def drop(self, i: int, reason: str) -> None:
        """Drop row ``i`` with ``reason`` and count it."""
        self.verdicts[i].reason = reason
        self.tally["dropped"] += 1


CHECKS: Registry[Callable[[Any, CheckStep], None]] = Registry(
    "check kind", expected="a check function (check, CheckStep) -> None"
)
"""``type`` -> the function that runs a check of that kind over a :class:`CheckStep`."""


def run_checks(
    rows: Sequence[dict[str, Any]],
    checks: Sequence[CodeOnlyCheck | AnswerCheck | JudgeCheck],
    *,
    references: dict[str, str] | None = None,
    judges: Sequence[Judge | None] = (),
) -> tuple[list[RowVerdict], dict[str, dict[str, int]]]:
    """Run the chain over chat rows; each check sees only the rows kept so far.

    Args:
        rows: ``{"id", "messages": [..., user, assistant]}`` records.
        checks: the chain, in order; each runs through its kind's entry of :data:`CHECKS`.
        references: the expected value per row id (``answer`` checks need it).
        judges: one judge per check (None for checks that need none).

    Returns:
        One verdict per row (in order), and per check ``{"seen", "dropped", <reason>: n}``.

    Raises:
        ValueError: an ``answer`` check without a reference for a row, or a judge check
            without a judge.
    """
    verdicts = [RowVerdict(str(r["id"])) for r in rows]
    counts: dict[str, dict[str, int]] = {}
    for index, check in enumerate(checks):
        live = [i for i, v in enumerate(verdicts) if v.reason is None]
        step = CheckStep(
            rows=rows,
            verdicts=verdicts,
            live=live,
            name=check.name,
            tally=counts.setdefault(check.name, {"seen": len(live), "dropped": 0}),
            references=references or {},
            judge=judges[index] if index < len(judges) else None,
        )
        CHECKS.get(check.type)(check, step)
    return verdicts, counts


@CHECKS("judge")
def run_judge_check(check: JudgeCheck, step: CheckStep) -> None:
    """Ask the step's judge about every live row; drop those under the threshold.

    Raises:
        ValueError: the step has no judge.
    """
    if step.judge is None:
        raise ValueError(f"check {step.name} has no judge")
    rows = [step.rows[i] for i in step.live]
    requests = [JudgeRequest(question=_user(r), answer=_reply(r)) for r in rows]
    for i, judgement in zip(step.live, step.judge.judge(requests, check.rubric), strict=True):
        step.verdicts[i].details[step.name] = {
            "score": judgement.score,
            "probability": judgement.probability,
            "label": judgement.label,
            "raw": judgement.raw,
        }
        if not _passes(check, judgement.score, judgement.probability, judgement.label):
            step.drop(i, step.name)


@CHECKS("code_only")
def run_code_only_check(check: CodeOnlyCheck, step: CheckStep) -> None:
    """Drop live rows whose reply is not code alone (reason ``code_only:<why>``)."""
    del check  # a code-only check has no settings
    _row_by_row(step, lambda i: check_code_only(_reply(step.rows[i])))


@CHECKS("answer")
def run_answer_check(check: AnswerCheck, step: CheckStep) -> None:
    """Drop live rows without the think/answer layout and the reference value.

    Raises:
        ValueError: a live row has no reference.
    """
    del check  # an answer check has no settings

    def one(i: int) -> tuple[bool, str | None]:
        row_id = step.verdicts[i].id
        reference = step.references.get(row_id)
        if reference is None:
            raise ValueError(f"row {row_id}: the answer check needs a reference")
        return check_think_answer(_reply(step.rows[i]), reference)

    _row_by_row(step, one)


def _row_by_row(step: CheckStep, decide: Callable[[int], tuple[bool, str | None]]) -> None:
    """Run a rule check (``decide(i) -> (ok, why)``) over the live rows, counting reasons."""
    for i in step.live:
        ok, why = decide(i)
        step.verdicts[i].details[step.name] = why or "ok"
        if not ok:
            reason = f"{step.name}:{why}"
            step.drop(i, reason)
            step.tally[reason] = step.tally.get(reason, 0) + 1


def with_checks(
    report: dict[str, Any],
    rows: Sequence[dict[str, Any]],
    verdicts: Sequence[RowVerdict],
    counts: dict[str, dict[str, int]],
) -> dict[str, Any]:
    """The filter's report (a dict) updated with what the checks dropped.

    Args:
        report: the filter stage's report of the rows before the checks.
        rows: the rows the checks saw.
        verdicts: :func:`run_checks`'s verdicts of ``rows``.
        counts: :func:`run_checks`'s counts.

    Returns:
        A new report: reasons of the checks added to ``rejected``, ``accepted`` and
        ``kept`` the rows that passed everything, ``checks`` the counts, and
        ``examples`` up to three dropped rows per reason (reply and verdict).
    """
    out = {**report, "rejected": dict(report["rejected"])}
    if not out.get("config", {}).get("check_format", True):
        # Number-format reasons cannot fire without the format check: keep the table short.
        out["rejected"] = {k: v for k, v in out["rejected"].items() if v or k == "leak"}
    for name, tally in counts.items():
        reasons = {k: v for k, v in tally.items() if k not in ("seen", "dropped")}
        out["rejected"].update(reasons or {name: tally["dropped"]})
    replies = {str(r["id"]): str(r["messages"][-1]["content"]) for r in rows}
    examples: dict[str, list[dict[str, Any]]] = {}
    for v in verdicts:
        if v.reason is not None and len(examples.setdefault(v.reason, [])) < 3:
            check = v.reason if v.reason.startswith("judge:") else v.reason.split(":")[0]
            examples[v.reason].append(
                {"id": v.id, "reply": replies[v.id][:300], "verdict": v.details.get(check)}
            )
    kept = sum(v.reason is None for v in verdicts)
    out.update(checks=counts, examples=examples, accepted=kept, kept=kept)
    if not kept:
        out["warnings"] = [*out.get("warnings", []), "no reply passed the checks"]
    return out


def _passes(
    check: JudgeCheck, score: float | None, probability: float | None, label: str | None
) -> bool:
    if label is not None:
        return label in check.keep_labels
    if check.min_score is not None:
        return score is not None and score >= check.min_score
    assert check.max_probability is not None  # the validator asks for one of the two
    return probability is not None and probability <= check.max_probability


def _reply(row: dict[str, Any]) -> str:
    return str(row["messages"][-1]["content"])


def _user(row: dict[str, Any]) -> str:
    users = [m["content"] for m in row["messages"] if m.get("role") == "user"]
    return str(users[-1]) if users else ""
