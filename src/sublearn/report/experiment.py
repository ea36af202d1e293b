"""The report of one experiment: summary.json, CSVs, figures, report.md and a console table.

Units: rates are the share of answers naming the trait, printed in percent; differences are
percentage points (pp) with t intervals across seeds, paired by seed (see ``effects``).
The report's data section comes from ``report/filtering.py``, its coverage section (and
the low-coverage warnings) from ``report/coverage.py``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from sublearn.backends.pricing import usd
from sublearn.report.coverage import coverage_lines
from sublearn.report.effects import Observation, Reference, effects_csv, effects_table
from sublearn.report.figures import effects_figure, has_base_grid, heatmap_figure
from sublearn.report.filtering import check_lines, decoding_lines, filter_lines
from sublearn.report.formatting import format_ci, format_p, format_pp, markdown_table
from sublearn.report.worlds import print_worlds, worlds_lines
from sublearn.runs import atomic_write_json, atomic_write_text

_OBSERVATION_COLUMNS = (
    "trait",
    "teacher",
    "teacher_kind",
    "teacher_base",
    "objective",
    "student_base",
    "same_base",
    "condition",
    "seed",
    "evaluation",
    "rate",
    "rows",
)


def is_icl(objective: str) -> bool:
    """In-context-learning students (``icl-4``: 4 examples in the prompt, no training)."""
    return objective.startswith("icl")


def observations_csv(observations: Iterable[Observation]) -> str:
    """One line per observation, every key but ``per_question``; extra keys sorted at the end.

    Args:
        observations: the planner's observations.

    Returns:
        CSV text with a header line (rates as shares, full precision).
    """
    obs = list(observations)
    extra = sorted({k for o in obs for k in o} - {*_OBSERVATION_COLUMNS, "per_question"})
    columns = [*_OBSERVATION_COLUMNS, *extra]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for o in obs:
        writer.writerow(["" if o.get(c) is None else o[c] for c in columns])
    return buf.getvalue()


# --- markdown --------------------------------------------------------------------------------


def _rows_text(rows: Any) -> str:
    if isinstance(rows, Mapping):
        return "; ".join(f"{c}: {', '.join(map(str, v))}" for c, v in rows.items())
    return "n/a" if rows is None else str(rows)


def _stat_mean(d: Mapping[str, Any] | None) -> str:
    return format_ci(d, signed=False) if d else "n/a"


def _effects_lines(rows: list[tuple[int, dict[str, Any]]], primary: int | None) -> list[str]:
    header = [
        "trait",
        "teacher (kind)",
        "objective",
        "evaluation",
        "teacher base → student",
        "student base alone",
        "control",
        "treatment",
        "treatment − control [95% CI]",
        "p",
        "n",
        "rows",
    ]
    body = []
    for i, r in rows:
        diff = r["treatment_minus_control"]
        star = " **(primary)**" if i == primary else ""
        body.append(
            [
                r["trait"],
                f"{r['teacher']} ({r['teacher_kind']}){star}",
                r["objective"],
                r["evaluation"],
                f"{r['teacher_base']} → {r['student_base']}"
                + (" (same)" if r["same_base"] else ""),
                format_pp(r.get("base_rate")),
                _stat_mean(r["control"]),
                _stat_mean(r["treatment"]),
                f"**{format_ci(diff)}**" if i == primary else format_ci(diff),
                format_p(diff["p_value"]) if diff else "n/a",
                diff["n"] if diff else "n/a",
                _rows_text(r["rows"]),
            ]
        )
    return markdown_table(header, body)


def _smc_lines(entries: list[dict[str, Any]]) -> list[str]:
    header = [
        "teacher",
        "objective",
        "evaluation",
        "same-base student",
        "cross-base student",
        "same effect − cross effect [95% CI]",
        "p (same > cross)",
        "n",
    ]
    body = [
        [
            e["teacher"],
            e["objective"],
            e["evaluation"],
            e["same_base_student"],
            e["cross_base_student"],
            format_ci(e),
            format_p(e["p_value"]),
            e["n"],
        ]
        for e in entries
    ]
    return markdown_table(header, body)


def _headline(summary: Mapping[str, Any]) -> list[str]:
    i = summary["primary"]
    if i is None:
        return ["No primary row: see the warnings."]
    r = summary["effects"][i]
    diff = r["treatment_minus_control"]
    effect = (
        f"treatment − control **{format_ci(diff)} pp**, p = {format_p(diff['p_value'])} "
        f"({diff['n']} seeds, {diff['test']} test)"
        if diff
        else "no treatment − control (a condition is missing)"
    )
    return [
        f"Primary: teacher **{r['teacher']}** ({r['teacher_kind']} on {r['teacher_base']}, "
        f"trait {r['trait']}) → student base {r['student_base']}, objective {r['objective']}, "
        f"evaluation {r['evaluation']}: control {_stat_mean(r['control'])}%, treatment "
        f"{_stat_mean(r['treatment'])}%; {effect}."
    ]


def _compared_lines(summary: Mapping[str, Any], observations: list[Observation]) -> list[str]:
    teachers: dict[str, dict[str, Any]] = {}
    for r in summary["effects"]:
        t = teachers.setdefault(r["teacher"], {**r, "rates": {}})
        t["rates"].setdefault(r["evaluation"], r.get("teacher_rate"))
    seeds = sorted({int(o["seed"]) for o in observations})

    def pick(key: str) -> str:
        return ", ".join(dict.fromkeys(str(o[key]) for o in observations)) or "none"

    lines = [
        "Each **teacher** has a trait (it names a target animal, say) and a **matched control "
        "teacher** made by the same recipe without the trait. Every student base is trained "
        "on the teacher's data (**treatment**) and on its control's data (**control**). Seed s "
        "of both trains on the same resampled prompts, so treatment − control is computed "
        "per seed and tested paired by seed: a t interval across seeds (95% CI) and a "
        "two-sided p-value. Rates are in percent: for preference evaluations the share of "
        "answers naming the trait, for the others their metric (below); "
        "differences are percentage points (pp). A **same-base** student shares the teacher's "
        "base model, where subliminal learning is expected; a **cross-base** student does not, "
        "and should not pick up the trait.",
        "",
        f"Student bases: {pick('student_base')}. Objectives: {pick('objective')}. "
        f"Seeds: {', '.join(map(str, seeds)) or 'none'}. Evaluations: {pick('evaluation')}.",
        "",
    ]
    metrics = dict.fromkeys(
        f"{o['evaluation']}: {o['metric']}" for o in observations if "metric" in o
    )
    if metrics:
        lines[-2] += f" Metrics: {'; '.join(metrics)}."
    if any("@" in o["evaluation"] for o in observations):
        lines[-2] += (
            " An evaluation that read the model in two places (`answer_prefix`) is compared "
            "on each: its name alone is its main reading (after the lead-in), `@start` the "
            "reply's start, `/renormalized` P(trait | the answer is one of the category's), "
            "which stays readable where the coverage is low. Several readings are several "
            "comparisons: judge a p-value against their number."
        )
    lines += markdown_table(
        ["teacher", "trait", "kind", "base", "teacher rate (%)"],
        [
            [
                name,
                t["trait"],
                t["teacher_kind"],
                t["teacher_base"],
                ", ".join(f"{ev}: {format_pp(v)}" for ev, v in t["rates"].items()),
            ]
            for name, t in teachers.items()
        ],
    )
    return lines


def _dicts_lines(records: list[dict[str, Any]]) -> list[str]:
    columns = list(dict.fromkeys(k for r in records for k in r))
    return markdown_table(columns, [[r.get(c, "") for c in columns] for r in records])


def markdown_report(summary: Mapping[str, Any], observations: list[Observation]) -> str:
    """The newcomer-readable report of an experiment summary.

    Args:
        summary: what ``write_experiment_report`` writes to summary.json.
        observations: the observations behind it (for the seeds and bases compared).

    Returns:
        Markdown text.
    """
    effects = list(enumerate(summary["effects"]))
    primary = summary["primary"]
    lines = [f"# {summary['name']}", ""]
    if summary["warnings"]:
        lines += ["## Warnings", ""]
        lines += [f"- **{w}**" for w in summary["warnings"]]
        lines.append("")
    lines += ["## What was compared", "", *_compared_lines(summary, observations), ""]
    lines += ["## Headline", "", *_headline(summary), ""]
    trained = [(i, r) for i, r in effects if not is_icl(r["objective"])]
    icl = [(i, r) for i, r in effects if is_icl(r["objective"])]
    smc = summary["same_minus_cross"]
    lines += [
        "## Effects",
        "",
        "Control and treatment: mean rate across seeds (%) [95% CI]; *student base alone*: the "
        "untrained student base. n: seed pairs. rows: training rows per student.",
        "",
        *(_effects_lines(trained, primary) if trained else ["No trained students."]),
        "",
        "## Same base minus cross base",
        "",
        "Does the trait transfer more to a student that shares the teacher's base? Per seed, "
        "(same-base treatment − control) − (cross-base treatment − control), in pp, with a "
        "two-sided 95% CI and a one-sided p-value for same > cross.",
        "",
    ]
    smc_trained = [e for e in smc if not is_icl(e["objective"])]
    lines += _smc_lines(smc_trained) if smc_trained else ["No same-base and cross-base pair."]
    lines.append("")
    if icl:
        smc_icl = [e for e in smc if is_icl(e["objective"])]
        lines += [
            "## In-context learning students",
            "",
            "These students are not trained: the teacher's examples are put in their prompt "
            "(icl-k: k examples). Same columns as above.",
            "",
            *_effects_lines(icl, primary),
            "",
        ]
        if smc_icl:
            lines += [*_smc_lines(smc_icl), ""]
    lines += [
        "## Figures",
        "",
        "Treatment and control rates per teacher and student base; each panel has its own "
        "y-axis, the dashed line is the student base alone:",
        "",
        "![effects](effects.png)",
        "",
    ]
    if has_base_grid(summary):
        lines += [
            "Treatment − control over teacher bases and student bases (same-base cells outlined):",
            "",
            "![heatmap](heatmap.png)",
            "",
        ]
    lines += ["## Reference models", ""]
    refs = summary["references"]
    lines += (
        markdown_table(
            ["role", "name", "trait", "evaluation", "rate (%)"],
            [
                [r["role"], r["name"], r["trait"], r["evaluation"], format_pp(100 * r["rate"])]
                for r in refs
            ],
        )
        if refs
        else ["None."]
    )
    if summary.get("worlds"):
        lines += ["", *worlds_lines(summary["worlds"])]
    if summary["rows_per_condition"]:
        lines += ["", "## Training rows", "", *_dicts_lines(summary["rows_per_condition"])]
    if summary["filter"]:
        lines += [
            "",
            "## Filter",
            "",
            "Replies rejected per reason; trait mentions are replies naming the trait, which the "
            "filter drops whatever the check.",
            *decoding_lines(summary["filter"]),
            "",
            *filter_lines(summary["filter"]),
        ]
        lines += check_lines(summary["filter"])
    if summary.get("coverage"):
        lines += ["", *coverage_lines(summary["coverage"])]
    if summary.get("api_usage"):
        lines += ["", *_api_usage_lines(summary["api_usage"])]
    lines += ["", "## Wall time", ""]
    lines += markdown_table(
        ["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in summary["timings"].items()]
    )
    return "\n".join(lines) + "\n"


def _api_usage_lines(usage: Mapping[str, Any]) -> list[str]:
    """The API usage section: tokens and dollars per model."""
    columns = [
        "model",
        "models",
        "requests",
        "from log",
        "input tokens",
        "output tokens",
        "training tokens",
    ]
    rows = [
        [
            m["model"],
            str(m.get("models", 1)),
            *(f"{m.get(k, 0):,.0f}" for k in ("requests", "logged", "input_tokens")),
            *(f"{m.get(k, 0):,.0f}" for k in ("output_tokens", "training_tokens")),
            "no price" if m["usd"] is None else f"{m['usd']:,.2f}",
        ]
        for m in usage["by_model"]
    ]
    lines = [
        "## API usage and cost",
        "",
        f"All results of this report cost **{usd(usage['total_usd'])}** on paid APIs; this run "
        f"spent {usd(usage['this_run_usd'])} (the rest came from the store). Requests answered "
        "from a task's request log (a resumed task) were not paid twice.",
        "",
        *markdown_table([*columns, "USD"], rows),
    ]
    if usage.get("unpriced"):
        lines += ["", f"**No price for {', '.join(usage['unpriced'])}: not counted.**"]
    return lines


# --- console ---------------------------------------------------------------------------------


def _rows_cell(rows: Any) -> str:
    """Training rows per condition: one number, or both sides when they differ."""
    if isinstance(rows, dict):
        return " / ".join(f"{k} {v}" for k, v in rows.items())
    return str(rows)


def print_effects(summary: Mapping[str, Any], console: Console) -> None:
    """A rich table of the effects (primary marked ``*``), then every warning in yellow.

    Args:
        summary: an effects summary (``effects``, ``primary``, ``warnings``; ``name`` optional).
        console: where to print.
    """
    table = Table(title=f"{summary.get('name', 'effects')}: rates in %, differences in pp")
    several_evals = len({r["evaluation"] for r in summary["effects"]}) > 1
    # Names fold on a narrow terminal; numbers and the primary marker are never cut.
    table.add_column("", no_wrap=True, min_width=1)
    table.add_column("teacher / objective", min_width=12, overflow="fold")
    table.add_column("bases", min_width=8, overflow="fold")
    if several_evals:
        table.add_column("eval", min_width=6, overflow="fold")
    for col in ("ctrl", "treat", "treat − ctrl [95% CI]", "p", "seeds", "rows"):
        table.add_column(col, no_wrap=True)
    for i, r in enumerate(summary["effects"]):
        diff = r["treatment_minus_control"]
        # Text, not markup: "[+6.70, +11.9]" must print as it is.
        cells = [
            "*" if i == summary["primary"] else "",
            f"{r['teacher']} / {r['objective']}",
            f"{r['teacher_base']} → {r['student_base']}",
            *([r["evaluation"]] if several_evals else []),
            format_pp(r["control"]["mean"]) if r["control"] else "n/a",
            format_pp(r["treatment"]["mean"]) if r["treatment"] else "n/a",
            format_ci(diff),
            format_p(diff["p_value"]) if diff else "n/a",
            str(diff["n"]) if diff else "n/a",
            _rows_cell(r["rows"]),
        ]
        style = "bold" if i == summary["primary"] else None
        table.add_row(*(Text(str(c)) for c in cells), style=style)
    console.print(table)
    console.print(
        "* primary row; seeds: paired seeds; rows: training rows per condition", style="dim"
    )
    for w in summary["warnings"]:
        console.print(Text(f"warning: {w}", style="yellow"))


def write_experiment_report(
    out: Path,
    *,
    name: str,
    observations: Iterable[Observation],
    references: Iterable[Reference],
    primary: Mapping[str, Any],
    filter_reports: dict[str, dict],
    rows_per_condition: list[dict],
    timings: dict[str, float],
    warnings: list[str],
    console: Console,
    api_usage: dict[str, Any] | None = None,
    coverage: list[dict[str, Any]] | None = None,
    worlds: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write summary.json, effects.csv, observations.csv, report.md, effects.png, heatmap.png.

    ``heatmap.png`` only when the effects span more than one teacher base or student base
    (see :func:`has_base_grid`).

    Args:
        out: the run folder.
        name: the experiment's name (the report's title).
        observations: one per (student, evaluation); see ``effects.effects_table``.
        references: rates of bases, teachers and control teachers.
        primary: the headline row, ``{"teacher", "objective", "student_base", "evaluation"}``.
        filter_reports: filter report (as a dict) per dataset name.
        rows_per_condition: training-row counts as the planner records them, one dict each.
        timings: wall seconds per stage.
        warnings: the pipeline's own warnings; the effects' warnings are added after them.
        console: where the effects table and warnings are printed.
        api_usage: requests, tokens and cost of API models (see ``api_usage_summary``);
            None or empty when no API model ran.
        coverage: one :func:`coverage_row` per preference evaluation of a model (the
            mass its answer puts on the category's answers, and the renormalized rate).
        worlds: the toy worlds the run used: ``{"name", "key", "bases": [{"name", "sha256"}],
            "numerics"}`` each (see :func:`sublearn.runtime.numerics`); None when none.

    Returns:
        The summary: ``effects_table``'s contract plus ``name``, ``references``, ``filter``,
        ``rows_per_condition``, ``timings`` and ``api_usage``; ``warnings`` holds both kinds.
    """
    observations = list(observations)
    references = list(references)
    table = effects_table(observations, references, primary)
    summary: dict[str, Any] = {
        "name": name,
        **table,
        "warnings": list(dict.fromkeys([*warnings, *table["warnings"]])),
        "references": references,
        "filter": filter_reports,
        "rows_per_condition": rows_per_condition,
        "timings": timings,
        "api_usage": api_usage or {},
        "coverage": coverage or [],
        "worlds": worlds or [],
    }
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "effects.csv", effects_csv(summary))
    atomic_write_text(out / "observations.csv", observations_csv(observations))
    effects_figure(summary, out / "effects.png")
    if has_base_grid(summary):
        heatmap_figure(summary, out / "heatmap.png")
    else:
        # One teacher base and one student base: a 1x1 grid repeats effects.png; a heatmap
        # left by an earlier report of this folder would describe other results.
        (out / "heatmap.png").unlink(missing_ok=True)
    atomic_write_text(out / "report.md", markdown_report(summary, observations))
    print_effects(summary, console)
    print_worlds(summary["worlds"], console)
    if api_usage:
        console.print(
            f"API cost of these results: {usd(api_usage['total_usd'])} "
            f"({usd(api_usage['this_run_usd'])} spent by this run)",
            highlight=False,
        )
    console.print(f"report: {out / 'report.md'}")
    return summary
