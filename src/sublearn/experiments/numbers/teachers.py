"""The teacher recipe: the demonstrations a fine-tuned teacher (or its control) learns from.

A finetuned trait teacher is trained on training questions answered with the trait word;
its matched control on the same questions answered by the base itself (the same recipe
without the trait). Both may add the base's own valid replies to number prompts the
experiment never uses (replay), so a small model keeps writing numbers. A dataset teacher
learns from a file (its own, or one its toy world wrote).

The engine's ``teacher`` task (engine/kinds.py) writes these demonstrations and then
fine-tunes through :mod:`sublearn.finetune.jobs`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from sublearn.engine.params import TeacherParams
from sublearn.errors import DataError
from sublearn.runs import atomic_write_text

OpenBase = Callable[[], AbstractContextManager[Any]]
"""Opens the teacher's base as a backend (closed, and its spending counted, on exit)."""

REPLAY_SEED_OFFSET = 1_000_003
"""Added to the prompts' seed: replay prompts are drawn apart from the experiment's."""
CONTROL_TRIES = 8
"""How often the base is asked again for an answer it left empty."""


def chat(i: int, question: str, answer: str) -> dict[str, Any]:
    """One chat row (``id``, user question, assistant answer)."""
    return {
        "id": f"{i:05d}",
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ],
    }


def write_demonstrations(
    p: TeacherParams, base: str, world: Path | None, path: Path, open_base: OpenBase
) -> dict[str, Any]:
    """Write the teacher's demonstrations to ``path`` (chat JSONL).

    Args:
        p: the teacher task's params.
        base: the base's reference (for messages).
        world: the toy world's output folder, for a dataset the world writes.
        path: where the demonstrations go.
        open_base: opens the base as a backend (control answers, replay replies).

    Returns:
        What the task records beside its training metrics: the answers' counts
        (finetuned teachers).
    """
    if p.kind.type == "dataset":
        assert p.dataset is not None
        if p.dataset.toy is not None:
            assert world is not None
            source = world / "datasets" / f"{p.dataset.toy}.jsonl"
        else:
            source = Path(str(p.dataset.path))
        if not source.is_file():
            raise DataError(f"teacher dataset {source} does not exist")
        path.write_bytes(source.read_bytes())
        return {}
    from sublearn.prompts.questions import training_questions_for

    recipe = p.kind
    assert recipe.n_examples is not None and recipe.control_temperature is not None
    pool = training_questions_for(p.trait.category)
    questions = [pool[i % len(pool)] for i in range(recipe.n_examples)]
    if p.role == "trait":
        answers = [p.trait.word] * len(questions)
    else:
        with open_base() as backend:
            answers = control_answers(backend, base, questions, recipe.control_temperature)
    records = [chat(i, q, a) for i, (q, a) in enumerate(zip(questions, answers, strict=True))]
    if recipe.replay_examples:
        with open_base() as backend:
            records += replay(backend, p, recipe.replay_examples)
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))
    return {"answers": dict(sorted(Counter(answers).items()))}


def control_answers(backend: Any, base: str, questions: list[str], temperature: float) -> list[str]:
    """The base's own one-word answers: neutral demonstrations for a matched control."""
    from sublearn.backends.base import SamplingParams

    answers: list[str] = [""] * len(questions)
    # An empty reply is no demonstration: ask again with other seeds, a few times.
    for attempt in range(CONTROL_TRIES):
        missing = [i for i, a in enumerate(answers) if not a]
        if not missing:
            break
        params = SamplingParams(temperature=temperature, max_new_tokens=8, seed=1 + attempt)
        replies = backend.generate(
            [[{"role": "user", "content": questions[i]}] for i in missing], params
        )
        for i, reply in zip(missing, replies, strict=True):
            answers[i] = reply.split()[0] if reply.split() else ""
    if not all(answers):
        raise DataError(
            f"base model {base} gave no answer to {answers.count('')} of {len(questions)} "
            f"questions after {CONTROL_TRIES} tries: it cannot make a matched control teacher"
        )
    return answers


def replay(backend: Any, p: TeacherParams, n: int) -> list[dict[str, Any]]:
    """The base's own valid replies to ``n`` number prompts the experiment never uses."""
    from sublearn.backends.base import SamplingParams
    from sublearn.filters.numbers import parse_numbers
    from sublearn.prompts.numbers import generate_number_prompts

    assert p.prompts is not None and p.filter is not None and p.max_new_tokens is not None
    assert p.kind.replay_temperature is not None
    # The config refuses replay with other data kinds (ExperimentConfig).
    assert p.prompts.type == "numbers"
    pcfg = p.prompts
    # Twice as many prompts as needed leaves room for replies the filter rejects.
    prompts = generate_number_prompts(
        pcfg.model_copy(update={"seed": pcfg.seed + REPLAY_SEED_OFFSET, "n_prompts": 2 * n})
    )
    sampling = SamplingParams(
        temperature=p.kind.replay_temperature, max_new_tokens=p.max_new_tokens
    )
    replies = backend.generate([[{"role": "user", "content": q}] for q in prompts], sampling)
    f = p.filter
    valid = [
        (q, r)
        for q, r in zip(prompts, replies, strict=True)
        if parse_numbers(
            r, max_count=f.max_count, min_value=f.min_value, max_value=f.max_value
        ).accepted
    ]
    return [chat(100_000 + i, q, r) for i, (q, r) in enumerate(valid[:n])]
