"""Run a numbers experiment through the engine and turn the store's outputs into a report."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.console import Console

from sublearn.engine.executors import make_executor
from sublearn.engine.runner import TaskRecord, run_plan
from sublearn.engine.store import Store
from sublearn.experiments.numbers.checks import check_plan
from sublearn.experiments.numbers.config import ExperimentConfig
from sublearn.experiments.numbers.plan import Plan, build_plan
from sublearn.runs import atomic_write_json


def run_experiment(
    cfg: ExperimentConfig,
    run_dir: Path,
    console: Console | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Plan, check, run every missing task, and write the run's report.

    Args:
        cfg: the experiment.
        run_dir: the run folder (config.yaml and meta.json already written).
        console: where progress, tables and warnings go.
        show_progress: draw progress bars.

    Returns:
        The summary (also in ``summary.json``).
    """
    console = console or Console()
    plan = build_plan(cfg)
    warnings = check_plan(plan)
    for w in warnings:
        console.print(f"[yellow]warning:[/] {w}", highlight=False)
    store = Store(cfg.store)
    started = time.perf_counter()
    records = run_plan(
        plan.tasks,
        store,
        make_executor(cfg.executor, cfg.threads),
        console=console,
        show_progress=show_progress,
    )
    wall = time.perf_counter() - started
    return write_run_report(plan, store, records, run_dir, console, warnings, wall)


def write_run_report(
    plan: Plan,
    store: Store,
    records: dict[str, TaskRecord],
    run_dir: Path,
    console: Console,
    warnings: list[str],
    wall_seconds: float | None = None,
) -> dict[str, Any]:
    """Collect the finished tasks' outputs into summary.json, report.md and figures."""
    from sublearn.report.experiment import write_experiment_report

    atomic_write_json(
        run_dir / "manifest.json",
        {"store": str(store.root), "tasks": [r.to_dict() for r in records.values()]},
    )
    pair_results = {name: records[task.id].result for name, task in plan.pairs.items()}
    observations = []
    for obs in plan.observations:
        metrics = _metrics(store, obs.task.id)
        result = metrics[obs.meta["trait"]]
        observations.append(
            {
                **{k: v for k, v in obs.meta.items() if k != "pair"},
                "rate": result["rate"],
                "per_question": result["per_question"],
                "rows": pair_results[obs.meta["pair"]]["rows"],
            }
        )
    references = []
    for ref in plan.references:
        metrics = _metrics(store, ref.task.id)
        for trait, result in metrics.items():
            if ref.meta.get("trait", trait) == trait:
                references.append({**ref.meta, "trait": trait, "rate": result["rate"]})
    filter_reports = {
        name: json.loads((store.path(task.id) / "report.json").read_text())
        for name, task in plan.filters.items()
    }
    rows_per_condition = [
        {"pair": name, **{k: v for k, v in r.items() if k != "warnings"}}
        for name, r in pair_results.items()
    ]
    all_warnings = list(warnings)
    for r in pair_results.values():
        all_warnings.extend(w for w in r.get("warnings", []) if w not in all_warnings)
    for name, report in filter_reports.items():
        all_warnings.extend(f"filter {name}: {w}" for w in report.get("warnings", []))
    timings: dict[str, float] = defaultdict(float)
    for r in records.values():
        timings[r.kind] += r.seconds
    if wall_seconds is not None:
        timings["wall (this run)"] = wall_seconds
    primary = plan.cfg.primary_spec().model_dump(mode="json")
    return write_experiment_report(
        run_dir,
        name=plan.cfg.name,
        observations=observations,
        references=references,
        primary=primary,
        filter_reports=filter_reports,
        rows_per_condition=rows_per_condition,
        timings={k: round(v, 1) for k, v in timings.items()},
        warnings=all_warnings,
        console=console,
    )


def _metrics(store: Store, task_id: str) -> dict[str, Any]:
    return json.loads((store.path(task_id) / "metrics.json").read_text())


def toy_world_folder(cfg: ExperimentConfig, world: str) -> Path:
    """Build (or find in the store) one of the config's toy worlds; its folder.

    Benchmarks and ``sublearn toy info`` use this to share the demo's world.
    """
    from sublearn.engine.executors import InlineExecutor

    task = build_plan(cfg).world_task(world)
    store = Store(cfg.store)
    run_plan([task], store, InlineExecutor(cfg.threads), show_progress=False)
    return store.path(task.id)
