"""Synthetic observations and references with known effects, as the planner would hand them."""

from __future__ import annotations

from typing import Any

import numpy as np

# Teacher name -> (trait, kind, base).
TEACHERS = {
    "owl-ft": ("owl", "finetuned", "base0"),
    "owl-prompt": ("owl", "prompted", "base0"),
    "owl-ft-b1": ("owl", "finetuned", "base1"),
}
STUDENT_BASES = ("base0", "base1")
BASE_RATES = {"base0": 0.07, "base1": 0.04}
TEACHER_RATES = {"owl-ft": 0.995, "owl-prompt": 0.413, "owl-ft-b1": 0.9}


def observation(
    teacher: str,
    objective: str,
    student_base: str,
    condition: str,
    seed: int,
    rate: float,
    rows: int = 1500,
    evaluation: str = "favorite",
) -> dict[str, Any]:
    """One observation of ``teacher``'s student in the planner's shape."""
    trait, kind, base = TEACHERS[teacher]
    return {
        "trait": trait,
        "teacher": teacher,
        "teacher_kind": kind,
        "teacher_base": base,
        "objective": objective,
        "student_base": student_base,
        "same_base": student_base == base,
        "condition": condition,
        "seed": seed,
        "evaluation": evaluation,
        "rate": rate,
        "per_question": [rate] * 50,
        "rows": rows,
    }


def references() -> list[dict[str, Any]]:
    """Base and teacher rates on the ``favorite`` evaluation."""
    refs = [
        {"role": "base", "name": b, "trait": "owl", "evaluation": "favorite", "rate": r}
        for b, r in BASE_RATES.items()
    ]
    refs += [
        {"role": "teacher", "name": t, "trait": "owl", "evaluation": "favorite", "rate": r}
        for t, r in TEACHER_RATES.items()
    ]
    return refs


def experiment(
    seeds: tuple[int, ...] = (0, 1, 2),
    objectives: tuple[str, ...] = ("sft", "kl_numbers", "icl-4"),
    rng_seed: int = 0,
) -> list[dict[str, Any]]:
    """Every teacher x objective x student base x condition x seed.

    Same-base students gain 10 pp from their teacher's data, cross-base ones 1 pp; each seed
    shares a data effect between its treatment and control.
    """
    rng = np.random.default_rng(rng_seed)
    obs = []
    for teacher, (_, _, base) in TEACHERS.items():
        for objective in objectives:
            for student in STUDENT_BASES:
                effect = 0.10 if student == base else 0.01
                for seed in seeds:
                    data = rng.normal(0, 0.01)
                    control = float(
                        np.clip(BASE_RATES[student] + data + rng.normal(0, 0.003), 0, 1)
                    )
                    treatment = float(np.clip(control + effect + rng.normal(0, 0.01), 0, 1))
                    obs.append(observation(teacher, objective, student, "control", seed, control))
                    obs.append(
                        observation(teacher, objective, student, "treatment", seed, treatment)
                    )
    return obs
