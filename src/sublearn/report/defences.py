"""The defence table: how much transfer each defence leaves, and what it costs.

For a defence d of objective o, the students of objective ``o+d`` train on the same
seeds' pairs as the undefended students of ``o`` (the data cleaned by d, or the same data
under d's fine-tune settings). Per seed s, the effect is e(s) = treatment − control. The
transfer left is mean_s e_d(s) / mean_s e_none(s), with a percentile bootstrap interval
that resamples seeds (both effects of a seed together, as they share data). The
capability cost is the defended students' mean loss per token on held-out control
replies minus the undefended students', paired by seed (t interval).
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from sublearn.report.stats import mean_ci

PP = 100.0
_BOOTSTRAP = 10_000


def _split(objective: str) -> tuple[str, str]:
    base, _, defence = objective.partition("+")
    return base, defence or "none"


def _by_seed(
    observations: Iterable[Mapping[str, Any]], value: str
) -> dict[tuple, dict[str, dict[int, dict[str, float]]]]:
    """values[(teacher, objective, student_base, evaluation)][defence][seed][condition]."""
    out: dict[tuple, dict[str, dict[int, dict[str, float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(dict))
    )
    for obs in observations:
        objective, defence = _split(obs["objective"])
        if objective.startswith("icl-"):
            continue
        key = (obs["teacher"], objective, obs["student_base"], obs.get("evaluation", ""))
        out[key][defence][int(obs["seed"])][obs["condition"]] = float(obs[value])
    return out


def _effects(cells: Mapping[int, Mapping[str, float]]) -> dict[int, float]:
    return {
        s: PP * (c["treatment"] - c["control"])
        for s, c in cells.items()
        if "treatment" in c and "control" in c
    }


def _share_interval(
    defended: np.ndarray, undefended: np.ndarray, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of mean(defended) / mean(undefended) over seeds."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(defended), (_BOOTSTRAP, len(defended)))  # (B, seeds)
    num = defended[idx].mean(axis=1)
    den = undefended[idx].mean(axis=1)
    ratio = num[den > 0] / den[den > 0]
    if len(ratio) < _BOOTSTRAP // 2:  # the undefended effect itself is not clearly positive
        return float("nan"), float("nan")
    low, high = np.percentile(ratio, [2.5, 97.5])
    return float(low), float(high)


def defence_table(
    observations: Sequence[Mapping[str, Any]],
    losses: Sequence[Mapping[str, Any]],
    cleaning: Mapping[str, Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """One row per (teacher, objective, student base, evaluation, defence).

    Args:
        observations: the experiment's student observations (objective ``o`` or ``o+d``).
        losses: per trained student ``{teacher, objective, student_base, condition, seed,
            loss}``.
        cleaning: per defence name, what its data-level steps removed (summed over seeds
            and conditions): ``{rows_in, rows_out, characters_masked, reply_characters}``.

    Returns:
        Rows with ``effect`` (pp, mean and CI over seeds), ``remaining`` (share of the
        undefended effect, with CI), ``loss`` (the students' held-out loss per token),
        ``loss_delta`` (defended minus undefended, paired by seed), and the cleaning counts.
    """
    rates = _by_seed(observations, "rate")
    loss = _by_seed([{**o, "evaluation": ""} for o in losses], "loss")
    rows = []
    for key, defences in rates.items():
        if len(defences) < 2 or "none" not in defences:
            continue
        teacher, objective, student_base, evaluation = key
        undefended = _effects(defences["none"])
        none_loss = loss.get((teacher, objective, student_base, ""), {}).get("none", {})
        for defence, cells in defences.items():
            effect = _effects(cells)
            seeds = sorted(set(effect) & set(undefended))
            row: dict[str, Any] = {
                "teacher": teacher,
                "objective": objective,
                "student_base": student_base,
                "evaluation": evaluation,
                "defence": defence,
                "seeds": len(seeds),
            }
            if len(seeds) >= 2:
                d = np.array([effect[s] for s in seeds])
                u = np.array([undefended[s] for s in seeds])
                ci = mean_ci(d)
                row["effect"] = {"mean": ci.mean, "ci95": [ci.lo, ci.hi]}
                share = d.mean() / u.mean() if u.mean() > 0 else float("nan")
                row["remaining"] = {"mean": float(share), "ci95": list(_share_interval(d, u))}
            d_loss = loss.get((teacher, objective, student_base, ""), {}).get(defence, {})
            if len(d_loss) >= 2:
                ci = mean_ci([float(np.mean(list(c.values()))) for c in d_loss.values()])
                row["loss"] = {"mean": ci.mean, "ci95": [ci.lo, ci.hi]}
            paired = [
                float(np.mean(list(d_loss[s].values())) - np.mean(list(none_loss[s].values())))
                for s in sorted(set(d_loss) & set(none_loss))
            ]
            if defence != "none" and len(paired) >= 2:
                ci = mean_ci(paired)
                row["loss_delta"] = {"mean": ci.mean, "ci95": [ci.lo, ci.hi]}
            if defence in cleaning:
                row["cleaning"] = dict(cleaning[defence])
            rows.append(row)
    return rows


def _fmt(stat: Mapping[str, Any] | None, scale: float = 1.0, digits: int = 1) -> str:
    if not stat:
        return "—"
    lo, hi = stat["ci95"]
    mean = stat["mean"] * scale
    if lo is None or hi is None or np.isnan(lo) or np.isnan(hi):
        return f"{mean:+.{digits}f} [—]"
    return f"{mean:+.{digits}f} [{lo * scale:+.{digits}f}, {hi * scale:+.{digits}f}]"


def _share(row: Mapping[str, Any]) -> str:
    if row["defence"] == "none":
        return "100% (reference)"
    stat = row.get("remaining")
    if not stat:
        return "—"
    return _fmt(stat, 100, 0).replace("+", "").replace(" [", "% [")


def _plain(stat: Mapping[str, Any] | None) -> str:
    return f"{stat['mean']:.3f}" if stat else "—"


def _cleaned(row: Mapping[str, Any]) -> str:
    c = row.get("cleaning")
    if not c:
        return "—"
    parts = []
    if c["rows_out"] != c["rows_in"]:
        parts.append(f"{1 - c['rows_out'] / c['rows_in']:.0%} rows dropped")
    if c.get("characters_masked"):
        parts.append(f"{c['characters_masked'] / max(c['reply_characters'], 1):.0%} chars masked")
    return ", ".join(parts) or "rewritten"


def defence_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The defence table as markdown."""
    lines = [
        "## Defences",
        "",
        "Transfer left = the defended students' effect (treatment − control, pp) over the "
        "undefended students' effect, same seeds and data; 95% bootstrap interval over seeds. "
        "Held-out loss = the students' loss per token on control replies to prompts no "
        "student trained on; Δ = defended − undefended, paired by seed (capability cost: "
        "positive is worse; a student that barely trained stays near its base's loss).",
        "",
        "| teacher | objective | student | defence | effect (pp) | transfer left | "
        "held-out loss | loss Δ | removed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['teacher']} | {r['objective']} | {r['student_base']} | {r['defence']} | "
            f"{_fmt(r.get('effect'))} | {_share(r)} | {_plain(r.get('loss'))} | "
            f"{_fmt(r.get('loss_delta'), 1, 3)} | {_cleaned(r)} |"
        )
    return lines


def print_defences(rows: list[dict[str, Any]], console: Console) -> None:
    """The defence table on the console."""
    table = Table(title="Defences: transfer left and capability cost")
    for col in ("student", "defence", "effect (pp)", "transfer left", "loss", "loss Δ", "removed"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            f"{r['objective']} {r['student_base']}",
            r["defence"],
            _fmt(r.get("effect")),
            _share(r),
            _plain(r.get("loss")),
            _fmt(r.get("loss_delta"), 1, 3),
            _cleaned(r),
        )
    console.print(table)


def _ends(stat: Mapping[str, Any]) -> tuple[float, float]:
    """An interval's ends, or the mean twice when it has none (no error bar drawn)."""
    lo, hi = stat["ci95"]
    if lo is None or hi is None or np.isnan(lo) or np.isnan(hi):
        return stat["mean"], stat["mean"]
    return lo, hi


def defence_figure(rows: list[dict[str, Any]], path: Path) -> None:
    """Per student base, the transfer left by each defence with its interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sublearn.runs import atomic_write_bytes

    panels: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["defence"] != "none" and r.get("remaining"):
            panels[f"{r['teacher']} {r['objective']} → {r['student_base']}"].append(r)
    if not panels:
        return
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(7, 0.5 + 0.45 * max(len(v) for v in panels.values()) * len(panels) + 1),
        squeeze=False,
    )
    for ax, (title, items) in zip(axes[:, 0], panels.items(), strict=True):
        names = [r["defence"] for r in items]
        means = np.array([100 * r["remaining"]["mean"] for r in items])
        ends = np.array([_ends(r["remaining"]) for r in items]) * 100  # (defences, 2)
        y = np.arange(len(items))
        ax.barh(y, means, color="#d95f02")
        ax.errorbar(means, y, xerr=[means - ends[:, 0], ends[:, 1] - means], fmt="none", ecolor="k")
        ax.axvline(100, color="#555", ls="--", lw=1)
        ax.axvline(0, color="#555", lw=1)
        ax.set_yticks(y, names)
        ax.invert_yaxis()  # the config's order, top to bottom
        ax.set_xlabel("transfer left (% of undefended effect)")
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
