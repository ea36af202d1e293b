"""The audit's report: ``audit.json``, ``audit.md``, per-detector figures, a console table."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table

from sublearn.audit.config import AuditConfig
from sublearn.audit.result import Verdict
from sublearn.report.formatting import format_p
from sublearn.runs import atomic_write_bytes, atomic_write_json, atomic_write_text

_DPI = 130
_DATA_COLOR, _CONTROL_COLOR = "#d95f02", "#9e9e9e"
_REPLY_CHARS = 80
_BAR_TOKENS = 15
# The per-token number a bar chart shows, by the keys each detector's top tokens carry.
_TOKEN_SCORES = ("log_odds", "coef", "score", "delta")
_ROW_SCORE = {
    "frequency": "row's mean unit log-odds, audited vs control (in-sample)",
    "classifier": "out-of-fold P(audited)",
}
_COLUMNS = ("detector", "statistic", "score", "95% CI", "p-value", "alpha", "verdict")


def write_audit_report(out: Path, cfg: AuditConfig, verdicts: list[Verdict], meta: dict) -> None:
    """Write ``audit.json``, ``audit.md`` and ``figures/*.png`` under ``out``.

    Args:
        out: the audit's folder (created if missing).
        cfg: the audit config, stored in ``audit.json``.
        verdicts: one per detector, in report order.
        meta: what the run knows about itself (row counts, seconds, models), stored as is.
    """
    out = Path(out)
    figures = _figures(out / "figures", verdicts)
    atomic_write_json(
        out / "audit.json",
        {
            "config": cfg.model_dump(mode="json"),
            "meta": meta,
            "flagged": [v.detector for v in verdicts if v.flagged],
            "verdicts": [v.to_dict() for v in verdicts],
            "figures": {k: [str(p.relative_to(out)) for p in v] for k, v in figures.items()},
        },
    )
    atomic_write_text(out / "audit.md", _markdown(out, cfg, verdicts, meta, figures))


def print_audit_table(console: Console, verdicts: list[Verdict]) -> None:
    """Print the one-line-per-detector table of ``audit.md`` to the console."""
    table = Table(*_COLUMNS, title="audit")
    styles = {"FLAGGED": "bold red", "clear": "green", "skipped": "dim", "WARNING": "yellow"}
    for v in verdicts:
        row = _row(v)
        word = row[-1].split(" ")[0]
        table.add_row(*row[:-1], f"[{styles[word]}]{row[-1]}[/]")
    console.print(table)


# --- markdown -------------------------------------------------------------------------------


def _row(v: Verdict) -> list[str]:
    """The table cells of one verdict, in ``_COLUMNS`` order."""
    if v.skipped is not None:
        word = f"skipped ({v.skipped})"
    elif v.warning is not None:
        word = "WARNING (AUC below chance: check the control)"
    else:
        word = "FLAGGED" if v.flagged else "clear"
    score = "n/a" if v.score is None else f"{v.score:.3f}"
    ci = "n/a" if v.ci is None else f"[{v.ci[0]:.3f}, {v.ci[1]:.3f}]"
    return [v.detector, v.statistic or "n/a", score, ci, format_p(v.p_value), f"{v.alpha:g}", word]


def _cell(value: Any) -> str:
    """Markdown-safe table cell text."""
    if isinstance(value, float):
        text = format_p(value) if abs(value) < 1e-3 and value != 0 else f"{value:.3g}"
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown(
    out: Path,
    cfg: AuditConfig,
    verdicts: list[Verdict],
    meta: dict,
    figures: dict[str, list[Path]],
) -> str:
    flagged = [v.detector for v in verdicts if v.flagged]
    lines = [
        f"# Audit of {cfg.data}",
        "",
        f"- control: {cfg.control or 'none'}",
        f"- base: {cfg.base or 'none'}; teachers: {', '.join(cfg.teachers) or 'none'}",
        f"- trait: {cfg.trait.word if cfg.trait else 'none named'}",
        *(f"- {k}: {v}" for k, v in meta.items()),
        "",
        f"**{'FLAGGED by ' + ', '.join(flagged) if flagged else 'No detector flagged the data'}"
        "** (a detector flags when its p-value is under its alpha).",
        "",
        "| " + " | ".join(_COLUMNS) + " |",
        "|" + "---|" * len(_COLUMNS),
    ]
    lines += ["| " + " | ".join(_cell(c) for c in _row(v)) + " |" for v in verdicts]
    for v in verdicts:
        lines += ["", f"## {v.detector} ({v.kind})", "", v.summary or "(no summary)"]
        if v.top_tokens:
            keys = list(v.top_tokens[0])
            lines += ["", "Top tokens:", "", "| " + " | ".join(keys) + " |"]
            lines += ["|" + "---|" * len(keys)]
            lines += [
                "| " + " | ".join(_cell(t.get(k, "")) for k in keys) + " |" for t in v.top_tokens
            ]
        if v.top_rows:
            lines += ["", "Top rows:", "", "| line | score | reply |", "|---|---|---|"]
            for r in v.top_rows:
                reply = (
                    r["reply"]
                    if len(r["reply"]) <= _REPLY_CHARS
                    else r["reply"][: _REPLY_CHARS - 3] + "..."
                )
                lines.append(f"| {r['index']} | {_cell(float(r['score']))} | `{_cell(reply)}` |")
        for path in figures.get(v.detector, []):
            lines += ["", f"![{path.stem}]({path.relative_to(out).as_posix()})"]
    return "\n".join(lines) + "\n"


# --- figures --------------------------------------------------------------------------------


def _figures(folder: Path, verdicts: list[Verdict]) -> dict[str, list[Path]]:
    """Draw every figure the verdicts have material for; paths per detector."""
    made: dict[str, list[Path]] = {}
    for v in verdicts:
        if v.row_scores and v.control_scores:
            path = folder / f"{v.detector}.png"
            score_histogram(v, path)
            made.setdefault(v.detector, []).append(path)
        if v.top_tokens and _token_key(v) is not None:
            path = folder / f"{v.detector}-tokens.png"
            token_bars(v, path)
            made.setdefault(v.detector, []).append(path)
    return made


def _save(fig: Figure, path: Path) -> Figure:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    atomic_write_bytes(path, buf.getvalue())
    plt.close(fig)
    return fig


def score_histogram(v: Verdict, path: Path) -> Figure:
    """Density histograms of the audited and control rows' scores on shared bins.

    Args:
        v: a verdict with ``row_scores`` and ``control_scores``.
        path: where to write the PNG.

    Returns:
        The (closed) figure, for inspection.
    """
    data = np.asarray(v.row_scores, dtype=float)
    control = np.asarray(v.control_scores, dtype=float)
    data, control = data[np.isfinite(data)], control[np.isfinite(control)]
    both = np.concatenate([data, control])  # (n_data + n_control,)
    # One set of edges for both, so the two densities are comparable bar by bar.
    bins = np.histogram_bin_edges(both, bins=min(40, max(10, int(np.sqrt(len(both))))))
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.hist(
        control, bins=bins.tolist(), density=True, alpha=0.55, color=_CONTROL_COLOR, label="control"
    )
    ax.hist(data, bins=bins.tolist(), density=True, alpha=0.55, color=_DATA_COLOR, label="audited")
    ax.set_xlabel(_ROW_SCORE.get(v.kind, f"per-row score ({v.kind})"), fontsize=8)
    ax.set_ylabel("density", fontsize=8)
    ax.tick_params(labelsize=8)
    verdict = "warning" if v.warning else "FLAGGED" if v.flagged else "clear"
    ax.set_title(f"{v.detector}: p = {format_p(v.p_value)} ({verdict})", fontsize=9)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def _token_key(v: Verdict) -> str | None:
    first = v.top_tokens[0]
    return next((k for k in _TOKEN_SCORES if k in first), None)


def token_bars(v: Verdict, path: Path) -> Figure:
    """Horizontal bars of the top tokens' scores (log-odds, coefficients, ...), top first.

    Args:
        v: a verdict with ``top_tokens`` carrying one of ``log_odds``, ``coef``, ``score``.
        path: where to write the PNG.

    Returns:
        The (closed) figure, for inspection.
    """
    key = _token_key(v)
    assert key is not None
    tokens = v.top_tokens[:_BAR_TOKENS]
    values = [float(t[key]) for t in tokens]
    labels = [str(t["token"])[:20] for t in tokens]
    fig, ax = plt.subplots(figsize=(5.0, 1.0 + 0.28 * len(tokens)))
    colors = [_DATA_COLOR if x >= 0 else _CONTROL_COLOR for x in values]
    ax.barh(range(len(tokens)), values, color=colors)
    ax.set_yticks(range(len(tokens)), labels, fontsize=8)
    ax.invert_yaxis()  # the strongest token on top
    ax.axvline(0.0, color="black", linewidth=0.8)
    low, high = min(0.0, *values), max(0.0, *values)
    span = (high - low) or 1.0
    ax.set_xlim(low - 0.05 * span, high + 0.05 * span)
    ax.set_xlabel(f"{key.replace('_', '-')} (> 0: more in audited data)", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    order = "by p-value" if "p" in tokens[0] else f"by {key}"
    ax.set_title(f"{v.detector}: top {len(tokens)} tokens ({order})", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
