"""Zero-shot MMLU scored from the answer letters' probabilities.

Every question shows its four options in their own order, lettered A-D, and asks for
the letter. The answer is the most probable letter (normalized over the letters, as
:func:`~sublearn.evaluation.choice.score_choice_batch` computes); the metric is the
accuracy of that answer, overall and per subject, with the mean probability of the
correct letter as a secondary metric (smoother for small capability shifts).

Questions are read from the original CSV files (no header; question, A, B, C, D, answer
letter; the subject from the file name, e.g. ``anatomy_test.csv``), a folder of them,
a JSONL/JSON/Parquet file in the hub's layout (``question``, ``choices``, ``answer`` as
an index, ``subject``), or the hub (``cais/mmlu``, configuration ``all``).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sublearn.errors import ConfigError, DataError
from sublearn.evaluation.choice import ChoiceQuestion, require_letters, score_choice_batch
from sublearn.evaluation.kinds import EvalRequest, MMLUEvalConfig
from sublearn.evaluation.results import OVERALL, EvalResult, mean
from sublearn.evaluation.truthfulqa import subset
from sublearn.prompts.loading import load_records

INSTRUCTION = "Reply with the letter of the correct answer only."

_CSV_LETTERS = ("A", "B", "C", "D")
_SPLIT_SUFFIX = re.compile(r"_(test|dev|val|validation|train|auxiliary_train)$")


@dataclass(frozen=True)
class MMLUItem:
    """One MMLU question.

    Attributes:
        question: the question.
        choices: the options, in their given order.
        answer: index of the correct option.
        subject: e.g. ``"anatomy"`` ("" when the source gives none).
    """

    question: str
    choices: tuple[str, ...]
    answer: int
    subject: str = ""


def load_mmlu(
    source: str, *, hub_config: str | None = "all", split: str = "test"
) -> list[MMLUItem]:
    """Read MMLU questions.

    Args:
        source: a ``.csv`` file or a folder of them (its ``*.csv`` files, not
            sub-folders) in the original layout, a ``.jsonl``/``.json``/``.parquet``
            file in the hub layout, or a hub dataset id.
        hub_config: the hub dataset's configuration (hub ids only).
        split: the hub dataset's split (hub ids only).

    Returns:
        The questions, in source order (files in name order).

    Raises:
        DataError: a missing file, a row with the wrong number of columns or an answer
            that names no option, or a hub dataset that cannot be loaded.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(path.glob("*.csv"))
        if not files:
            raise DataError(f"{path}: no MMLU .csv files in this folder")
        return [item for f in files for item in _read_csv(f)]
    if source.lower().endswith(".csv"):
        return _read_csv(path)
    rows = load_records(source, ["question"], hub_config=hub_config, split=split, check=_check_row)
    return [
        MMLUItem(
            question=row["question"].strip(),
            choices=tuple(str(c) for c in row["choices"]),
            answer=_answer_index(row["answer"], len(row["choices"])),
            subject=str(row.get("subject") or ""),
        )
        for row in rows
    ]


def _answer_index(answer: Any, n: int) -> int:
    """The option index an answer names (an index or a letter); -1 when it names none."""
    if isinstance(answer, bool):
        return -1
    if isinstance(answer, int):
        return answer if 0 <= answer < n else -1
    if isinstance(answer, str):
        text = answer.strip().upper()
        letters = [chr(ord("A") + i) for i in range(n)]
        if text in letters:
            return letters.index(text)
        if text.isdigit() and int(text) < n:
            return int(text)
    return -1


def _check_row(row: dict[str, Any]) -> str | None:
    choices = row.get("choices")
    if not isinstance(choices, Sequence) or isinstance(choices, str) or len(choices) < 2:
        return "missing field 'choices' (a list of at least two options)"
    if "answer" not in row:
        return "missing field 'answer' (an option index or letter)"
    if _answer_index(row["answer"], len(choices)) < 0:
        return f"answer {row['answer']!r} names none of the {len(choices)} choices"
    return None


def _read_csv(path: Path) -> list[MMLUItem]:
    if not path.is_file():
        raise DataError(f"MMLU file not found: {path}")
    subject = _SPLIT_SUFFIX.sub("", path.stem)
    items: list[MMLUItem] = []
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            for line, row in enumerate(csv.reader(handle), start=1):
                if not row:
                    continue
                if len(row) != 6:
                    raise DataError(
                        f"{path}:{line}: expected 6 columns (question, A, B, C, D, answer; "
                        f"no header), got {len(row)}"
                    )
                answer = _answer_index(row[5], 4)
                if answer < 0:
                    raise DataError(f"{path}:{line}: answer {row[5]!r} is not one of A, B, C, D")
                items.append(MMLUItem(row[0].strip(), tuple(row[1:5]), answer, subject))
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason})") from None
    except csv.Error as err:
        raise DataError(f"{path}: not a readable CSV file ({err})") from None
    if not items:
        raise DataError(f"{path}: no questions")
    return items


def mmlu_stem(item: MMLUItem) -> str:
    """The question as asked: a line naming the subject (when known), then the question."""
    if not item.subject:
        return item.question
    return (
        f"The following is a multiple choice question about {item.subject.replace('_', ' ')}."
        f"\n\n{item.question}"
    )


def evaluate_mmlu(
    request: EvalRequest[MMLUEvalConfig],
    *,
    items: list[MMLUItem] | None = None,
) -> EvalResult:
    """Zero-shot accuracy of the most probable answer letter.

    Args:
        request: the model and settings: ``backend``: the model (``score``); ``cfg``:
            source, subjects, subset and letters; ``system_prompt``: a system message put
            first in every conversation; ``context``: prior chat turns put before every
            question. ``targets`` and ``judge`` are not read.
        items: the questions, when already loaded (else read from ``cfg.source``).

    Returns:
        ``metric="accuracy"``, ``values`` by ``"overall"`` and by subject; secondary
        ``p_correct`` (mean normalized probability of the correct letter), same keys.

    Raises:
        DataError: see :func:`load_mmlu`; or no question of the asked subjects.
        ConfigError: a question with more options than letters.
        ModelError: a letter the tokenizer cannot spell.
    """
    backend, cfg, system_prompt, context = (
        request.backend,
        request.cfg,
        request.system_prompt,
        request.context,
    )
    if items is None:
        items = load_mmlu(cfg.source, hub_config=cfg.hub_config, split=cfg.split)
    if cfg.subjects is not None:
        wanted = set(cfg.subjects)
        kept = [it for it in items if it.subject in wanted]
        if not kept:
            known = sorted({it.subject for it in items})
            raise DataError(
                f"no MMLU question of subjects {sorted(wanted)} in {cfg.source}; "
                f"subjects there: {', '.join(known[:20])}{' ...' if len(known) > 20 else ''}"
            )
        items = kept
    items = [items[i] for i in subset(len(items), cfg.limit, cfg.seed)]
    letters = list(cfg.letters)
    widest = max((len(it.choices) for it in items), default=0)
    if widest > len(letters):
        raise ConfigError(f"MMLU questions have up to {widest} options but letters are {letters}")
    require_letters(backend, letters)
    questions = [ChoiceQuestion(mmlu_stem(it), it.choices) for it in items]
    probs = score_choice_batch(
        backend,
        questions,
        letters,
        instruction=INSTRUCTION,
        system_prompt=system_prompt,
        context=list(context or []),
    )  # [question][option]
    records: list[dict[str, object]] = []
    correct: dict[str, list[float]] = {}
    p_correct: dict[str, list[float]] = {}
    for it, row in zip(items, probs, strict=True):
        picked = max(range(len(row)), key=row.__getitem__)
        hit = float(picked == it.answer)
        for key in (OVERALL, *([it.subject] if it.subject else [])):
            correct.setdefault(key, []).append(hit)
            p_correct.setdefault(key, []).append(row[it.answer])
        records.append(
            {
                "subject": it.subject,
                "question": it.question,
                "choices": list(it.choices),
                "answer": letters[it.answer],
                "picked": letters[picked],
                "probs": dict(zip(letters, row, strict=False)),
            }
        )
    return EvalResult(
        "mmlu",
        "accuracy",
        {k: mean(v) for k, v in correct.items()},
        records,
        {
            "questions": len(items),
            "source": cfg.source,
            "subjects": sorted(k for k in correct if k != OVERALL),
        },
        {"p_correct": {k: mean(v) for k, v in p_correct.items()}},
    )
