"""Engine commands: ``run``, ``demo``, ``plan``, ``sweep`` and ``report``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from sublearn.cli.options import OutOption, SetOption, console, err_console, user_errors
from sublearn.errors import ConfigError
from sublearn.presets import preset_path

DEMO_CONFIG = ("toy", "owl-numbers")

ConfigArg = Annotated[Path, typer.Argument(help="Experiment YAML (see configs/).")]


def _load(path: Path, overrides: list[str] | None) -> Any:
    from sublearn.api import load_experiment

    return load_experiment(path, overrides or [])


def _setup(threads: int | None) -> None:
    from sublearn.runtime import configure_threads, quiet_libraries

    quiet_libraries()
    configure_threads(threads)


def _run(path: Path, overrides: list[str] | None, out: Path | None, command: str) -> None:
    from sublearn.api import run as run_api
    from sublearn.cli.outputs import prepare_output

    cfg = _load(path, overrides)
    run_dir = prepare_output(out or Path("runs") / cfg.name, "folder")
    console.print(f"run folder: [bold]{run_dir}[/]  store: [bold]{cfg.store}[/]")
    run_api(cfg, run_dir, console=console, command=command)


def run(config: ConfigArg, set_: SetOption = None, out: OutOption = None) -> None:
    """Run an experiment: teachers, generation, filter, students, evaluation, report.

    Every task's output is kept in the store under a hash of what determines it, so a
    rerun (or another config that shares tasks) does only what is missing.
    """
    with user_errors():
        _run(config, set_, out, f"run {config}")


def demo(set_: SetOption = None, out: OutOption = None) -> None:
    """Run the embedded default: the toy world's owl experiment (offline, CPU, minutes)."""
    with user_errors():
        _run(preset_path(*DEMO_CONFIG), set_, out, "demo")


def plan(config: ConfigArg, set_: SetOption = None) -> None:
    """Print an experiment's task graph: what the store has and what a run would do."""
    from sublearn.api import plan as plan_api
    from sublearn.backends.pricing import usd
    from sublearn.engine.store import Store
    from sublearn.experiments.numbers.costs import (
        ESTIMATE_TITLE,
        UNREAD_SOURCES,
        estimate_usage,
        print_cost_table,
    )
    from sublearn.experiments.numbers.servers import check_servers

    with user_errors():
        cfg = _load(config, set_)
        planned = plan_api(cfg)
        warnings, status = planned.warnings, planned.status
        store = Store(cfg.store)
        _print_plan(status, cfg.store)
        for task, done in status:
            if not done and store.is_done(task.id):
                console.print(
                    f"[yellow]warning:[/] corrupt store entry {task.id} ({task.name}: "
                    f"{store.problem(task.id)}): a run moves it aside and recomputes it",
                    highlight=False,
                )
        todo = [t for t, done in status if not done]
        estimate = estimate_usage(todo, cfg.providers.openai.samples_per_request)
        for note in dict.fromkeys(UNREAD_SOURCES):
            console.print(f"[yellow]warning:[/] {note}", highlight=False)
        if estimate:
            cost = print_cost_table(console, estimate, cfg.pricing, ESTIMATE_TITLE)
            budget = f" (budget_usd {usd(cfg.budget_usd)[1:]})" if cfg.budget_usd else ""
            console.print(f"estimated cost: {usd(cost)}{budget}", highlight=False)
        for w in [*warnings, *check_servers(cfg, strict=False)]:
            console.print(f"[yellow]warning:[/] {w}", highlight=False)


def _print_plan(status: list, store: str) -> None:
    table = Table(title=f"plan (store {store})")
    for col in ("kind", "tasks", "cached", "to run"):
        table.add_column(col, justify="right" if col != "kind" else "left")
    kinds: dict[str, list[int]] = {}
    for task, done in status:
        counts = kinds.setdefault(task.kind, [0, 0])
        counts[0 if done else 1] += 1
    for kind, (cached, todo) in kinds.items():
        table.add_row(kind, str(cached + todo), str(cached), str(todo))
    console.print(table)
    todo_names = [t.name for t, done in status if not done]
    total = len(status)
    console.print(f"{total - len(todo_names)} of {total} tasks cached, {len(todo_names)} to run")
    for name in todo_names[:12]:
        console.print(f"  will run  {name}", highlight=False)
    if len(todo_names) > 12:
        console.print(f"  ... and {len(todo_names) - 12} more", highlight=False)


def sweep(config: ConfigArg, set_: SetOption = None, out: OutOption = None) -> None:
    """Run every point of the config's `sweep.grid` on its executor; report per point."""
    from sublearn.cli.outputs import prepare_output
    from sublearn.experiments.numbers.sweep import run_sweep

    with user_errors():
        cfg = _load(config, set_)
        if cfg.sweep is None:
            raise ConfigError(f"{config}: no `sweep:` section with a grid to run")
        _setup(cfg.threads)
        folder = prepare_output(out or Path("runs") / f"{cfg.name}-sweep", "folder")
        rows = run_sweep(config, set_ or [], folder, console)
    failed = [r["label"] for r in rows if r.get("error")]
    if failed:
        err_console.print(
            f"[bold red]error:[/] {len(failed)} of {len(rows)} sweep points failed "
            f"({', '.join(failed)}); the others are reported",
            highlight=False,
        )
        raise typer.Exit(code=1)


def report(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `sublearn run`.")],
) -> None:
    """Rebuild a finished run's summary.json, report.md and figures from the store."""
    from sublearn.engine.executors import InlineExecutor
    from sublearn.engine.runner import plan_status, run_plan
    from sublearn.engine.store import Store
    from sublearn.errors import StoreError
    from sublearn.experiments.numbers.experiment import write_run_report
    from sublearn.experiments.numbers.plan import build_plan

    with user_errors():
        cfg = _load(run_dir / "config.yaml", [])
        compiled = build_plan(cfg)
        store = Store(cfg.store)
        missing = [t.name for t, done in plan_status(compiled.tasks, store) if not done]
        if missing:
            raise StoreError(
                f"{run_dir}: {len(missing)} task(s) are not in the store {cfg.store}, or fail "
                f"its verification "
                f"(e.g. {missing[0]}); run `sublearn run {run_dir / 'config.yaml'}` to finish it"
            )
        # Every task is done (checked above), so the executor is never asked to run one.
        records = run_plan(compiled.tasks, store, InlineExecutor(), console, show_progress=False)
        write_run_report(compiled, store, records, run_dir, console, [])
