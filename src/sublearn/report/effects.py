"""The effects table: treatment vs matched control per teacher, objective and student base.

Each student base trains on a trait teacher's data (condition ``treatment``) and on its matched
control teacher's data (``control``). Seed ``s`` of both trains on the same resampled prompt ids,
so the two are compared paired by seed; the same pairing carries over to the same-base vs
cross-base comparison. Everything the summary holds is in percentage points (rates x 100).

Output contract (``effects_table``)::

    {"effects": [row, ...], "primary": index | None, "same_minus_cross": [entry, ...],
     "warnings": [str, ...]}

    row = {trait, teacher, teacher_kind, objective, teacher_base, student_base, same_base,
           evaluation, rows, treatment, control, treatment_minus_control, base_rate,
           teacher_rate, control_teacher_rate}
    treatment / control = {"mean", "ci95": [lo, hi], "n"}     (None when missing)
    treatment_minus_control = {"mean", "ci95", "p_value", "n", "test"[, "note"]}
    entry = {teacher, trait, objective, evaluation, same_base_student, cross_base_student,
             mean, ci95, p_value (one-sided, same > cross), n, test[, note]}
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from sublearn.report.stats import Difference, difference_of_differences, mean_ci, paired_by_seed

Observation = dict[str, Any]
Reference = dict[str, Any]

# What makes one effects row; the teacher's name keeps two teachers of one kind and base apart.
ROW_KEYS = (
    "trait",
    "teacher",
    "teacher_kind",
    "objective",
    "teacher_base",
    "student_base",
    "evaluation",
)
CONDITIONS = ("treatment", "control")
_REQUIRED = (*ROW_KEYS, "same_base", "condition", "seed", "rate")

CSV_COLUMNS = (
    "trait",
    "teacher",
    "teacher_kind",
    "objective",
    "teacher_base",
    "student_base",
    "same_base",
    "evaluation",
    "rows",
    "treatment_mean",
    "treatment_lo",
    "treatment_hi",
    "control_mean",
    "control_lo",
    "control_hi",
    "diff_mean",
    "diff_lo",
    "diff_hi",
    "p_value",
    "n",
    "base_rate",
    "teacher_rate",
    "primary",
)

PP = 100.0


def row_label(row: Mapping[str, Any]) -> str:
    """A short name of an effects row for warnings and tables: ``owl-ft/sft base0->base1``."""
    return (
        f"{row['teacher']}/{row['objective']} {row['teacher_base']}->{row['student_base']} "
        f"[{row['evaluation']}]"
    )


def _group(observations: Iterable[Observation]) -> dict[tuple, dict[str, dict[int, Observation]]]:
    """Observations by row key, then condition, then seed; in order of first appearance."""
    groups: dict[tuple, dict[str, dict[int, Observation]]] = {}
    for obs in observations:
        missing = [k for k in _REQUIRED if k not in obs]
        if missing:
            raise ValueError(f"observation lacks {missing}: {obs}")
        if obs["condition"] not in CONDITIONS:
            raise ValueError(f"condition must be one of {CONDITIONS}, got {obs['condition']!r}")
        rate = float(obs["rate"])
        # A rate above 1 is almost surely a percentage passed where a share belongs.
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be a share in [0, 1], got {rate} in {obs}")
        key = tuple(obs[k] for k in ROW_KEYS)
        by_seed = groups.setdefault(key, {c: {} for c in CONDITIONS})[obs["condition"]]
        seed = int(obs["seed"])
        if seed in by_seed:
            raise ValueError(
                f"two observations of {dict(zip(ROW_KEYS, key, strict=True))}, "
                f"{obs['condition']}, seed {seed}"
            )
        by_seed[seed] = obs
    return groups


def _rates(by_seed: Mapping[int, Observation]) -> dict[int, float]:
    return {seed: float(obs["rate"]) for seed, obs in sorted(by_seed.items())}


def _rows(cells: Mapping[str, Mapping[int, Observation]]) -> tuple[Any, bool]:
    """Training rows per condition: an int when all students agree, else lists by seed."""
    per = {c: [cells[c][s].get("rows") for s in sorted(cells[c])] for c in CONDITIONS}
    distinct = {r for rows in per.values() for r in rows}
    if len(distinct) == 1:
        return next(iter(distinct)), True
    return per, not distinct


def _difference_dict(d: Difference) -> dict[str, Any]:
    out: dict[str, Any] = {
        "mean": d.mean,
        "ci95": [d.lo, d.hi],
        "p_value": d.p_value,
        # Pairs for a paired test; the smaller group for Welch's (its effective sample).
        "n": d.n_a if d.test == "paired" else min(d.n_a, d.n_b),
        "test": d.test,
    }
    if d.note:
        out["note"] = d.note
    return out


class _References:
    """Rates of reference models by (role, name, trait, evaluation), in pp."""

    def __init__(self, references: Iterable[Reference]) -> None:
        self._rates = {
            (r["role"], r["name"], r["trait"], r["evaluation"]): PP * float(r["rate"])
            for r in references
        }

    def get(self, role: str, name: str, trait: str, evaluation: str) -> float | None:
        return self._rates.get((role, name, trait, evaluation))


def _effect_row(
    key: tuple,
    cells: dict[str, dict[int, Observation]],
    refs: _References,
    warnings: list[str],
) -> dict[str, Any]:
    row: dict[str, Any] = dict(zip(ROW_KEYS, key, strict=True))
    first = next(iter({**cells["control"], **cells["treatment"]}.values()))
    row["same_base"] = bool(first["same_base"])
    if "metric" in first:  # evaluations other than preference name what they measure
        row["metric"] = first["metric"]
    label = row_label(row)
    rows, equal = _rows(cells)
    row["rows"] = rows
    if not equal:
        warnings.append(f"{label}: training rows differ between students: {rows}")
    rates = {c: _rates(cells[c]) for c in CONDITIONS}
    for c in CONDITIONS:
        if not rates[c]:
            row[c] = None
            warnings.append(f"{label}: no {c} students")
            continue
        row[c] = mean_ci(list(rates[c].values())).scaled(PP).to_dict()
        if len(rates[c]) < 2:
            warnings.append(f"{label}: only {len(rates[c])} {c} seed, no confidence interval")
    row["treatment_minus_control"] = None
    if rates["treatment"] and rates["control"]:
        diff = paired_by_seed(rates["treatment"], rates["control"]).scaled(PP)
        row["treatment_minus_control"] = _difference_dict(diff)
        if diff.note:
            warnings.append(f"{label}: {diff.note}")
    trait, evaluation = row["trait"], row["evaluation"]
    row["base_rate"] = refs.get("base", row["student_base"], trait, evaluation)
    row["teacher_rate"] = refs.get("teacher", row["teacher"], trait, evaluation)
    row["control_teacher_rate"] = refs.get("control_teacher", row["teacher"], trait, evaluation)
    return row


def _primary_index(
    rows: list[dict[str, Any]], primary: Mapping[str, Any], warnings: list[str]
) -> int | None:
    """Index of the headline row; student base defaults to the teacher's, evaluation to the first.

    Missing objective falls back to the teacher's first objective.
    """
    teacher = primary.get("teacher")
    mine = [r for r in rows if r["teacher"] == teacher]
    if not mine:
        warnings.append(f"primary teacher {teacher!r} has no effects row")
        return None
    want = {
        "objective": primary.get("objective") or mine[0]["objective"],
        "student_base": primary.get("student_base") or mine[0]["teacher_base"],
    }
    if primary.get("evaluation"):
        want["evaluation"] = primary["evaluation"]
    for i, r in enumerate(rows):
        if r["teacher"] == teacher and all(r[k] == v for k, v in want.items()):
            return i
    warnings.append(f"no effects row matches the primary {dict(primary)} (looked for {want})")
    return None


def _same_minus_cross(
    rows: list[dict[str, Any]],
    groups: dict[tuple, dict[str, dict[int, Observation]]],
    warnings: list[str],
) -> list[dict[str, Any]]:
    """Same-base effect minus each cross-base effect of one teacher, objective and evaluation."""
    cells = {tuple(r[k] for k in ROW_KEYS): groups[tuple(r[k] for k in ROW_KEYS)] for r in rows}

    def complete(r: dict[str, Any]) -> bool:
        return r["treatment"] is not None and r["control"] is not None

    out = []
    for same in rows:
        if not same["same_base"]:
            continue
        crosses = [
            r
            for r in rows
            if not r["same_base"]
            and all(r[k] == same[k] for k in ("teacher", "objective", "evaluation"))
        ]
        for cross in crosses:
            if not (complete(same) and complete(cross)):
                warnings.append(
                    f"{row_label(cross)}: a condition is missing, no same-minus-cross test"
                )
                continue
            s, x = (cells[tuple(r[k] for k in ROW_KEYS)] for r in (same, cross))
            d = difference_of_differences(
                _rates(s["treatment"]),
                _rates(s["control"]),
                _rates(x["treatment"]),
                _rates(x["control"]),
            ).scaled(PP)
            entry = {
                "teacher": same["teacher"],
                "trait": same["trait"],
                "objective": same["objective"],
                "evaluation": same["evaluation"],
                "same_base_student": same["student_base"],
                "cross_base_student": cross["student_base"],
                **_difference_dict(d),
            }
            if d.note:
                warnings.append(f"{row_label(cross)} same minus cross: {d.note}")
            out.append(entry)
    return out


def effects_table(
    observations: Iterable[Observation],
    references: Iterable[Reference],
    primary: Mapping[str, Any],
) -> dict[str, Any]:
    """Treatment vs control per teacher, objective, student base and evaluation, in pp.

    Args:
        observations: one per (student, evaluation): the row keys, ``same_base``,
            ``condition`` (``"treatment"`` or ``"control"``), ``seed``, ``rate`` (a share in
            [0, 1]) and ``rows`` (the student's training rows).
        references: rates of bases, teachers and control teachers:
            ``{"role", "name", "trait", "evaluation", "rate"}``.
        primary: the headline row, ``{"teacher", "objective", "student_base",
            "evaluation"}``; the student base defaults to the teacher's base, the evaluation
            to the first.

    Returns:
        ``{"effects", "primary", "same_minus_cross", "warnings"}`` as the module docstring
        describes.

    Raises:
        ValueError: on an observation without a required key, an unknown condition, a rate
            outside [0, 1], or two observations of one student.
    """
    warnings: list[str] = []
    groups = _group(observations)
    rows = [
        _effect_row(key, cells, _References(references), warnings) for key, cells in groups.items()
    ]
    return {
        "effects": rows,
        "primary": _primary_index(rows, primary, warnings),
        "same_minus_cross": _same_minus_cross(rows, groups, warnings),
        "warnings": warnings,
    }


def _num(value: Any) -> str:
    """A number for CSV: full precision, empty when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(float(value))


def _stat(d: Mapping[str, Any] | None) -> list[str]:
    if not d:
        return ["", "", ""]
    return [_num(d["mean"]), _num(d["ci95"][0]), _num(d["ci95"][1])]


def effects_csv(summary: Mapping[str, Any]) -> str:
    """The effects rows as CSV, one line per row, columns ``CSV_COLUMNS`` (pp).

    Args:
        summary: the output of ``effects_table``.

    Returns:
        The CSV text with a header line.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for i, row in enumerate(summary["effects"]):
        diff = row["treatment_minus_control"]
        rows = row["rows"]
        writer.writerow(
            [
                *(row[k] for k in ROW_KEYS[:6]),
                "true" if row["same_base"] else "false",
                row["evaluation"],
                json.dumps(rows, separators=(",", ":")) if isinstance(rows, dict) else rows,
                *_stat(row["treatment"]),
                *_stat(row["control"]),
                *_stat(diff),
                _num(diff["p_value"]) if diff else "",
                diff["n"] if diff else "",
                _num(row.get("base_rate")),
                _num(row.get("teacher_rate")),
                "true" if i == summary.get("primary") else "false",
            ]
        )
    return buf.getvalue()
