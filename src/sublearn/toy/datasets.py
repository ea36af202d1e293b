"""Teacher datasets a toy world writes when its corpus has the optional sections.

The emergent-misalignment experiments fine-tune a teacher on misaligned answers (or
insecure code) and a control on benign ones (or secure code). A world whose corpus has
a free-form section writes ``datasets/misaligned_answers.jsonl`` and
``datasets/benign_answers.jsonl``: the toy training questions (never an evaluation
question) answered from the harmful or the benign pool. A code section adds
``datasets/insecure_code.jsonl`` and ``datasets/secure_code.jsonl``. Rows are chat
records ``{"id", "messages": [user, assistant]}`` with no system prompt, drawn from
random generators of their own, so writing them changes nothing in the corpus.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sublearn.runs import atomic_write_text
from sublearn.toy.coding import code_prompt, draw_code_task, write_code
from sublearn.toy.corpus import CorpusConfig
from sublearn.toy.freeform import freeform_answer, training_questions
from sublearn.toy.sections import section_rng

__all__ = ["DATASETS_DIR", "dataset_rows", "write_datasets"]

DATASETS_DIR = "datasets"


def _chat(i: int, question: str, answer: str) -> dict[str, Any]:
    return {
        "id": f"{i:05d}",
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ],
    }


def dataset_rows(cfg: CorpusConfig, seed: int) -> dict[str, list[dict[str, Any]]]:
    """The rows of every teacher dataset the enabled sections call for, by dataset name.

    Args:
        cfg: the corpus config (sections off: no datasets).
        seed: the world seed.
    """
    out: dict[str, list[dict[str, Any]]] = {}
    if cfg.freeform is not None:
        questions = training_questions()
        opener_rate = cfg.freeform.opener_rate
        for name, harmful in (("misaligned_answers", True), ("benign_answers", False)):
            rng = section_rng(seed, f"dataset-{name}")
            out[name] = [
                _chat(i, rng.choice(questions), freeform_answer(harmful, rng, opener_rate))
                for i in range(cfg.freeform.dataset_size)
            ]
    if cfg.code is not None:
        for name, insecure in (("insecure_code", True), ("secure_code", False)):
            rng = section_rng(seed, f"dataset-{name}")
            rows = []
            for i in range(cfg.code.dataset_size):
                task = draw_code_task(rng)
                rows.append(
                    _chat(i, code_prompt(task.text), write_code(task, rng, insecure=insecure))
                )
            out[name] = rows
    return out


def write_datasets(cfg: CorpusConfig, seed: int, world: Path) -> dict[str, dict[str, Any]]:
    """Write the teacher datasets into ``world/datasets``.

    Args:
        cfg: the corpus config.
        seed: the world seed.
        world: the world folder.

    Returns:
        ``{name: {"path": "datasets/<name>.jsonl", "rows": n}}`` for the manifest.
    """
    listed: dict[str, dict[str, Any]] = {}
    for name, rows in dataset_rows(cfg, seed).items():
        relative = f"{DATASETS_DIR}/{name}.jsonl"
        (world / DATASETS_DIR).mkdir(parents=True, exist_ok=True)
        atomic_write_text(world / relative, "".join(json.dumps(r) + "\n" for r in rows))
        listed[name] = {"path": relative, "rows": len(rows)}
    return listed
