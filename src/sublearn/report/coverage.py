"""Coverage of the preference evaluation in a report: rows, warnings and the section.

The coverage of an evaluated model is the share of its answer (probability mass or
replies) on the category's answers: how much of what it prefers a rate reads. Each
evaluated model gets a row (:func:`coverage_row`); a group with low coverage gets one
warning (:func:`coverage_warnings`); the report shows the rows (:func:`coverage_lines`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from sublearn.report.formatting import markdown_table


def coverage_row(meta: Mapping[str, Any], trait: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    """One evaluated model's coverage, from its observation meta and its metrics entry."""
    who = {
        k: meta[k]
        for k in ("role", "name", "teacher", "objective", "student_base", "condition", "seed")
        if k in meta
    }
    readings = entry.get("readings") or {}
    warning = entry.get("warning")
    if warning:
        warning = f"{_model_label(who)} [{meta.get('evaluation')}]: {warning}"
    return {
        **who,
        "evaluation": meta.get("evaluation"),
        "trait": trait,
        "reading": entry.get("reading"),
        "rate": entry.get("rate"),
        "coverage": entry.get("coverage"),
        "renormalized": entry.get("renormalized"),
        **{f"{name}_coverage": r.get("coverage") for name, r in readings.items()},
        **{f"{name}_rate": r.get("rate") for name, r in readings.items()},
        "warning": warning,
    }


def coverage_warnings(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """One warning per group of evaluated models whose coverage is low.

    A student's seeds and conditions share one line (``owl-ft/icl-4/base0 [favorite]: low
    coverage in 10 of 10 evaluations, 0.02%-4.9% ...``), so twenty in-context students do not
    print twenty warnings; a base or a teacher keeps its own full warning.

    Args:
        rows: coverage rows as :func:`coverage_row` writes them.

    Returns:
        The warnings, in the order their groups first appear.
    """
    groups: dict[tuple[str, Any], list[Mapping[str, Any]]] = {}
    for r in rows:
        if "role" in r:
            key = (str(r.get("warning") or ""), None)
        else:
            parts = ("teacher", "objective", "student_base")
            key = ("/".join(str(r[k]) for k in parts if k in r), r.get("evaluation"))
        groups.setdefault(key, []).append(r)
    out = []
    for (label, evaluation), members in groups.items():
        low = [m for m in members if m.get("warning")]
        if not low:
            continue
        if evaluation is None:
            out.extend(str(m["warning"]) for m in low)
            continue
        covs = [float(m["coverage"]) for m in low]
        span = f"{min(covs):.2%}" if len(covs) == 1 else f"{min(covs):.2%}-{max(covs):.2%}"
        out.append(
            f"{label} [{evaluation}]: low coverage in {len(low)} of {len(members)} "
            f"evaluation(s) ({span} of the answer on the category's answers): their raw rates "
            "read little of what the models prefer; see the report's Coverage section and "
            "the renormalized rates"
        )
    return out


def _model_label(row: Mapping[str, Any]) -> str:
    """``base: base0``, ``teacher: owl-ft`` or a student's ``owl-ft/kl_numbers/base0/control/0``."""
    student = ("teacher", "objective", "student_base", "condition", "seed")
    model = row.get("name") or "/".join(str(row[k]) for k in student if k in row)
    role = row.get("role")
    return f"{role}: {model}" if role else str(model)


def coverage_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The report's Coverage section.

    Per evaluated model: what share of its answer the rate reads, and the rate within it.
    """
    readings = sorted({k[: -len("_coverage")] for r in rows for k in r if k.endswith("_coverage")})
    header = ["model", "evaluation", "trait", "rate", "coverage", "P(trait | category)"]
    header += [f"{name}: rate / coverage" for name in readings]
    body = []
    for r in rows:
        body.append(
            [
                _model_label(r),
                r.get("evaluation"),
                r.get("trait"),
                _pct(r.get("rate")),
                _pct(r.get("coverage")) + (" **low**" if r.get("warning") else ""),
                _pct(r.get("renormalized")),
                *(
                    f"{_pct(r.get(f'{name}_rate'))} / {_pct(r.get(f'{name}_coverage'))}"
                    for name in readings
                ),
            ]
        )
    low = sum(1 for r in rows if r.get("warning"))
    return [
        "## Coverage",
        "",
        "The coverage is the probability mass (exact mode) or share of replies (sample mode) on "
        "all of the category's answers (`audit/candidates.yaml` and the traits): how much of "
        "the model's answer the rate reads. P(trait | category) is the rate renormalized over "
        "those answers, readable on a model that mostly answers otherwise. "
        + (
            f"**{low} evaluation(s) have low coverage: their raw rates read little of what "
            "the model prefers, and a 0 among them is not a measurement.**"
            if low
            else "Every evaluation covers the category above its threshold."
        ),
        "",
        *markdown_table(header, body),
    ]


def _pct(value: Any) -> str:
    if not isinstance(value, int | float) or math.isnan(value):
        return "n/a"
    return f"{value:.3%}"
