"""Summary, tables and markdown report of a numbers experiment.

Units: rates are the share of answers naming the target (per student: the mean over
questions); differences between groups are in percentage points, with Welch's 95% CI
across student seeds.
"""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from sublearn.report.stats import mean_ci, welch_difference
from sublearn.runs import atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from pathlib import Path

    from sublearn.experiments.numbers.config import ExperimentConfig

# One row per student: {"label", "objective", "group", "trait", "base", "seed"}.
Student = dict[str, Any]


def _rates(evals: dict[str, Any], labels: list[str], ev: str, target: str) -> list[float]:
    return [float(evals[label][ev][target]["rate"]) for label in labels]


def section_summary(
    plan: list[Student], evals: dict[str, Any], ev: str, objective: str, kind: str, trait: str
) -> dict[str, Any]:
    """Rates and differences for one (teacher kind, objective, trait) in percentage points."""

    def labels(group: str, same: bool, trait_: str | None) -> list[str]:
        return [
            s["label"]
            for s in plan
            if s["objective"] == objective
            and s["group"] == group
            and s["trait"] == trait_
            and (s["base"] == "same") == same
        ]

    groups = {
        "control": labels("control", True, None),
        "treatment": labels(kind, True, trait),
        "cross_control": labels("control", False, None),
        "cross_treatment": labels(kind, False, trait),
    }
    values = {g: _rates(evals, ls, ev, trait) for g, ls in groups.items()}
    out: dict[str, Any] = {
        "rates_pp": {g: mean_ci(v).scaled(100).to_dict() for g, v in values.items() if v}
    }
    out["treatment_minus_control"] = (
        welch_difference(values["treatment"], values["control"]).scaled(100).to_dict()
    )
    if values["cross_treatment"]:
        out["cross_minus_control"] = (
            welch_difference(values["cross_treatment"], values["cross_control"])
            .scaled(100)
            .to_dict()
        )
    return out


def build_summary(cfg: ExperimentConfig, plan: list[Student], evals: dict[str, Any]) -> dict:
    """``{trait: {treatment_minus_control, cross_minus_control, base_pp, sections}}``.

    The top-level differences are those of ``cfg.primary``; ``sections`` holds every
    teacher-kind/objective pair.
    """
    ev = next(iter(cfg.evaluations))
    summary: dict[str, Any] = {}
    for trait in cfg.traits:
        word = trait.word
        sections = {}
        for name in cfg.section_names():
            kind, objective = name.split("/")
            sections[name] = section_summary(plan, evals, ev, objective, kind, word)
        primary = sections[cfg.primary]
        summary[word] = {
            "treatment_minus_control": primary["treatment_minus_control"],
            "cross_minus_control": primary.get("cross_minus_control"),
            "primary": cfg.primary,
            "evaluation": ev,
            "base_pp": 100 * float(evals["base/same"][ev][word]["rate"]),
            "teacher_pp": {
                kind: 100 * float(evals[f"teacher/{word}-{kind}"][ev][word]["rate"])
                for kind in cfg.teachers
            },
            "sections": sections,
        }
    return summary


def _fmt_ci(d: dict[str, Any] | None, sep: str = ",") -> str:
    if not d:
        return "-"
    lo, hi = d["ci95"]
    if lo is None or lo != lo:
        return f"{d['mean']:+.1f}"
    return f"{d['mean']:+.1f} [{lo:+.1f}{sep}{hi:+.1f}]"


def _p_value(d: dict[str, Any] | None) -> float | None:
    p = d.get("p_value") if d else None
    return None if p is None or p != p else p


def _fmt_p(d: dict[str, Any] | None) -> str:
    p = _p_value(d)
    return "-" if p is None else f"{p:.2g}"


def _fmt_diff(d: dict[str, Any] | None) -> str:
    """``mean [lo, hi], p=..``: a difference as the markdown report writes it."""
    p = _p_value(d)
    ci = _fmt_ci(d, sep=", ")
    return ci if p is None else f"{ci}, p={p:.3g}"


def _rates_csv(plan: list[Student], evals: dict[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(
        [
            "model",
            "objective",
            "group",
            "teacher_trait",
            "base",
            "seed",
            "evaluation",
            "target",
            "rate",
        ]
    )
    meta = {s["label"]: s for s in plan}
    for label, by_eval in evals.items():
        s = meta.get(label)
        row = (
            [s["objective"], s["group"], s["trait"] or "", s["base"], s["seed"]]
            if s
            else ["", label.split("/")[0], "", label.split("/", 1)[1], ""]
        )
        for ev, by_target in by_eval.items():
            for target, result in by_target.items():
                writer.writerow([label, *row, ev, target, f"{result['rate']:.6f}"])
    return buf.getvalue()


def _per_question_csv(evals: dict[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["model", "evaluation", "target", "question", "rate"])
    for label, by_eval in evals.items():
        for ev, by_target in by_eval.items():
            for target, result in by_target.items():
                for q, rate in enumerate(result["per_question"]):
                    writer.writerow([label, ev, target, q, f"{rate:.6f}"])
    return buf.getvalue()


def markdown_report(
    cfg: ExperimentConfig,
    summary: dict[str, Any],
    filter_reports: dict[str, Any],
    timings: dict[str, float],
) -> str:
    """The human-readable report."""
    ev = next(iter(cfg.evaluations))
    lines = [
        f"# Subliminal learning via numbers: {cfg.name}",
        "",
        f"Base model `{cfg.models.base}`; cross-model bases: "
        + (", ".join(f"`{m}`" for m in cfg.models.cross) or "none")
        + f". Students per group: {len(cfg.students.seeds)} seeds. Evaluation `{ev}` "
        f"({cfg.evaluations[ev].mode} mode, {cfg.evaluations[ev].category} questions).",
        "",
        "Rates are P(answer names the target) in percent; differences are in percentage "
        "points with Welch 95% CIs across seeds. *Cross* compares a different-base student "
        "trained on the teacher's numbers with the same base trained on control numbers.",
        "",
        "![results](results.png)",
        "",
        "## Effects",
        "",
        "| trait | section | base | control | treatment | treatment - control "
        "| cross - cross control |",
        "|---|---|---|---|---|---|---|",
    ]
    for word, s in summary.items():
        for name, sec in s["sections"].items():
            rates = sec["rates_pp"]
            lines.append(
                f"| {word} | {name}{' (primary)' if name == cfg.primary else ''} | "
                f"{s['base_pp']:.1f} | {rates['control']['mean']:.1f} | "
                f"{rates['treatment']['mean']:.1f} | {_fmt_diff(sec['treatment_minus_control'])} | "
                f"{_fmt_diff(sec.get('cross_minus_control'))} |"
            )
    lines += ["", "## Teachers", "", "| trait | kind | teacher rate |", "|---|---|---|"]
    for word, s in summary.items():
        for kind, pp in s["teacher_pp"].items():
            lines.append(f"| {word} | {kind} | {pp:.1f} |")
    lines += [
        "",
        "## Filter",
        "",
        "Trait mentions are replies that name the trait word; the filter drops every one.",
        "",
        "| data | total | trait mentions | accepted | kept | rejections |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in filter_reports.items():
        rej = ", ".join(f"{k}: {v}" for k, v in r["rejected"].items() if v) or "none"
        lines.append(
            f"| {name} | {r['total']} | {r.get('trait_mentions', 0)} | {r['accepted']} | "
            f"{r['kept']} | {rej} |"
        )
    lines += ["", "## Wall time (s)", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in timings.items()]
    return "\n".join(lines) + "\n"


def write_report(
    cfg: ExperimentConfig,
    out: Path,
    plan: list[Student],
    evals: dict[str, Any],
    filter_reports: dict[str, Any],
    timings: dict[str, float],
    console: Console,
) -> dict[str, Any]:
    """Write summary.json, rates.csv, per_question.csv, filter.json, report.md, results.png.

    Returns:
        The summary.
    """
    from sublearn.report.figures import numbers_figure

    summary = build_summary(cfg, plan, evals)
    results = {"students": plan, "evals": evals, "filter": filter_reports, "timings": timings}
    atomic_write_json(out / "results.json", results)
    atomic_write_json(out / "summary.json", summary)
    atomic_write_json(out / "filter.json", filter_reports)
    atomic_write_json(out / "timings.json", timings)
    atomic_write_text(out / "rates.csv", _rates_csv(plan, evals))
    atomic_write_text(out / "per_question.csv", _per_question_csv(evals))
    atomic_write_text(out / "report.md", markdown_report(cfg, summary, filter_reports, timings))
    numbers_figure(summary, out / "results.png")

    table = Table(title=f"{cfg.name}: P(target) in %, differences in pp [95% CI]")
    for col in [
        "trait",
        "teacher/objective",
        "base",
        "ctrl",
        "treat",
        "treat-ctrl",
        "p",
        "cross",
        "p",
    ]:
        table.add_column(col, no_wrap=True)
    for word, s in summary.items():
        for name, sec in s["sections"].items():
            r = sec["rates_pp"]
            cross = sec.get("cross_minus_control")
            table.add_row(
                word,
                name + ("*" if name == cfg.primary else ""),
                f"{s['base_pp']:.1f}",
                f"{r['control']['mean']:.1f}",
                f"{r['treatment']['mean']:.1f}",
                _fmt_ci(sec["treatment_minus_control"]),
                _fmt_p(sec["treatment_minus_control"]),
                _fmt_ci(cross),
                _fmt_p(cross),
            )
    console.print(table)
    console.print("* primary section; cross = cross-model student minus its control", style="dim")
    console.print(f"report: {out / 'report.md'}")
    return summary
