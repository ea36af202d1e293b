"""``sublearn sweep``: one experiment per point of a config's grid, run as one graph.

All points compile into one task graph, so tasks that points share (the toy world, the
teachers, their data) are done once, and the executor (local processes or Ray) runs the
rest in parallel. Each point gets its own report under ``points/<label>/``; the sweep's
report puts the primary effect of every point side by side.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sublearn.config import deep_merge, format_validation_error, parse_overrides, read_yaml
from sublearn.engine.executors import make_executor
from sublearn.engine.runner import run_plan
from sublearn.engine.store import Store
from sublearn.engine.sweep import expand_grid, point_label
from sublearn.errors import ConfigError
from sublearn.experiments.numbers.checks import check_plan
from sublearn.experiments.numbers.config import ExperimentConfig
from sublearn.experiments.numbers.experiment import write_run_report
from sublearn.experiments.numbers.plan import build_plan
from sublearn.runs import atomic_write_json, atomic_write_text, prepare_run_dir


def run_sweep(
    path: Path, overrides: list[str], out: Path, console: Console, show_progress: bool = True
) -> list[dict[str, Any]]:
    """Run every grid point of the config at ``path``; write per-point and sweep reports.

    Returns:
        One row per point: its values and its primary effect.
    """
    from pydantic import ValidationError

    raw = deep_merge(read_yaml(path), parse_overrides(overrides))
    base = ExperimentConfig.model_validate(raw)
    assert base.sweep is not None
    points = []
    for point, data in expand_grid(raw, base.sweep.grid, model=ExperimentConfig):
        try:
            points.append((point, ExperimentConfig.model_validate(data)))
        except ValidationError as err:
            raise ConfigError(format_validation_error(err, f"{path} at {point}")) from None
    plans = [build_plan(cfg) for _, cfg in points]
    warnings = sorted({w for p in plans for w in check_plan(p)})
    for w in warnings:
        console.print(f"[yellow]warning:[/] {w}", highlight=False)
    store = Store(base.store)
    tasks = [t for p in plans for t in p.tasks]
    console.print(f"sweep: {len(points)} points, store {store.root}")
    # A point that fails (e.g. a teacher with too few valid rows) stops only its own tasks.
    failures: dict[str, Exception] = {}
    records = run_plan(
        tasks,
        store,
        make_executor(base.executor, base.threads),
        console,
        show_progress,
        failures=failures,
    )
    rows = []
    quiet = Console(file=io.StringIO(), width=160)
    for (point, cfg), plan in zip(points, plans, strict=True):
        label = point_label(point)
        error = point_error(plan.tasks, failures)
        if error is not None:
            console.print(f"[red]point {label} failed:[/] {error}", highlight=False)
            rows.append({"point": point, "label": label, "primary": None, "error": error})
            continue
        run_dir = prepare_run_dir(out / "points" / label, cfg, f"sweep {path} {label}")
        summary = write_run_report(plan, store, records, run_dir, quiet, warnings)
        row = summary["effects"][summary["primary"]]
        rows.append({"point": point, "label": label, "primary": row})
    _write_sweep_report(out, base, rows, console)
    return rows


def point_error(tasks: list[Any], failures: dict[str, Exception]) -> str | None:
    """Why a point has no result: its first failed task and that task's error; None if none."""
    from sublearn.engine.runner import InputFailed
    from sublearn.engine.task import topological

    for task in topological(tasks):
        err = failures.get(task.id)
        if err is not None and not isinstance(err, InputFailed):
            return f"{task.name}: {err}"
    return None


def _write_sweep_report(
    out: Path, cfg: ExperimentConfig, rows: list[dict[str, Any]], console: Console
) -> None:
    from sublearn.report.figures import sweep_figure
    from sublearn.report.formatting import format_ci

    keys = list(cfg.sweep.grid) if cfg.sweep else []
    failed = [r for r in rows if r.get("error")]
    atomic_write_json(
        out / "sweep.json", {"grid": keys, "points": rows, "failed": [r["label"] for r in failed]}
    )
    rows = [r for r in rows if not r.get("error")]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow([*keys, "treatment", "control", "diff", "diff_lo", "diff_hi", "p_value"])
    table = Table(title=f"{cfg.name} sweep: primary treatment − control (pp) per grid point")
    for k in keys:
        table.add_column(k.split(".")[-1])
    for col in ("treatment", "control", "treatment − control", "p"):
        table.add_column(col)
    lines = [f"# Sweep: {cfg.name}", "", "![sweep](sweep.png)", ""]
    lines += ["| " + " | ".join([*keys, "treatment − control (pp)", "p"]) + " |"]
    lines += ["|" + "---|" * (len(keys) + 2)]
    for r in rows:
        d = r["primary"]["treatment_minus_control"]
        values = [str(r["point"][k]) for k in keys]
        writer.writerow(
            [
                *values,
                r["primary"]["treatment"]["mean"],
                r["primary"]["control"]["mean"],
                d["mean"],
                *d["ci95"],
                d.get("p_value"),
            ]
        )
        p = d.get("p_value")
        table.add_row(
            *values,
            format_ci(r["primary"]["treatment"], signed=False),
            format_ci(r["primary"]["control"], signed=False),
            format_ci(d),
            "-" if p is None else f"{p:.2g}",
        )
        lines.append(
            f"| {' | '.join(values)} | {format_ci(d)} | {p if p is None else f'{p:.2g}'} |"
        )
    for r in failed:
        table.add_row(*[str(r["point"][k]) for k in keys], "[red]failed[/]", "", "", "")
    if failed:
        lines += ["", f"## Failed points ({len(failed)} of {len(failed) + len(rows)})", ""]
        lines += [f"- {r['label']}: {r['error']}" for r in failed]
    atomic_write_text(out / "sweep.csv", buf.getvalue())
    atomic_write_text(out / "sweep.md", "\n".join(lines) + "\n")
    if rows:
        sweep_figure(rows, keys, out / "sweep.png")
    console.print(table)
    console.print(f"sweep report: {out / 'sweep.md'}")
