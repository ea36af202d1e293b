"""``sublearn mnist``: subliminal learning of MLPs through auxiliary logits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from sublearn.cli.options import (
    ConfigOption,
    OutOption,
    SetOption,
    console,
    user_errors,
)
from sublearn.cli.outputs import prepare_output
from sublearn.cli.tasks import (
    PlanOption,
    StoreOption,
    open_store,
    print_plan,
    run_into_folder,
)
from sublearn.config import ConfigError, format_validation_error, load_config, read_yaml
from sublearn.experiments.mnist.config import MnistConfig
from sublearn.presets import preset_path
from sublearn.runs import read_json


def build_config(
    preset: str, config: Path | None, overrides: list[str], flags: dict[str, Any]
) -> MnistConfig:
    """Preset, then the config file, then ``--set`` overrides, then the direct flags.

    Raises:
        ConfigError: naming every invalid key and value.
    """
    cfg = load_config(MnistConfig, config, overrides, base=read_yaml(preset_path("mnist", preset)))
    given = {k: v for k, v in flags.items() if v is not None}
    if not given:
        return cfg
    try:
        return MnistConfig.model_validate({**cfg.model_dump(), **given})
    except ValidationError as err:
        raise ConfigError(
            format_validation_error(err, "command-line options", MnistConfig)
        ) from None


def mnist(
    preset: Annotated[
        str, typer.Option("--preset", "-p", help="Preset in configs/mnist: digits or paper.")
    ] = "digits",
    config: ConfigOption = None,
    set_: SetOption = None,
    out: OutOption = None,
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", help="digits, mnist or fashion-mnist (sets dataset)."),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Folder with the IDX files (sets data_dir)."),
    ] = None,
    models: Annotated[
        int | None, typer.Option("--models", "-n", help="Models in parallel (sets n_models).")
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="auto, cpu or cuda (sets device).")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed (sets seed).")] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", help="Torch CPU threads (sets threads).")
    ] = None,
    store: StoreOption = None,
    plan: PlanOption = False,
) -> None:
    """Distill MLP students on noise through auxiliary logits only (paper section 5).

    Trains N teachers on real images, then distills students on noise using
    only the m extra logits, and reports the test accuracy of six conditions:
    reference init, teacher, students on aux or all logits, and cross-model
    students that start from another model's init. Writes summary.json,
    per_model.csv and accuracy.png to the run folder.

    Runs as one engine task: a finished identical run (threads and device aside) is
    copied from the store instead of trained again.
    """
    with user_errors():
        flags = {
            "dataset": dataset,
            "data_dir": data_dir,
            "n_models": models,
            "device": device,
            "seed": seed,
            "threads": threads,
        }
        cfg = build_config(preset, config, list(set_ or []), flags)
        run_dir = prepare_output(out or Path("runs") / f"mnist-{cfg.dataset}-{preset}", "folder")

        # Deferred: torch takes seconds to import, and other commands do not need it.
        from sublearn.experiments.mnist.task import mnist_task
        from sublearn.runtime import resolve_device

        # Both raise SublearnErrors (DeviceError, DataError), which user_errors reports.
        resolve_device(cfg.device)
        task = mnist_task(cfg)  # reads the IDX files' content: a missing one fails here
        tasks_store = open_store(store)
        if plan:
            print_plan([task], tasks_store)
            return
        console.print(
            f"mnist: {cfg.dataset}, {cfg.n_models} models, m={cfg.n_aux} aux logits, "
            f"{cfg.noise} noise, {cfg.distill_loss} loss -> {run_dir}",
            highlight=False,
        )
        run_into_folder(task, tasks_store, run_dir, cfg, "sublearn mnist", cfg.threads)
        print_results(run_dir, cfg.n_models)


def print_results(run_dir: Path, n_models: int) -> None:
    """The accuracy table and the step counts, read from the run folder's files."""
    summary = read_json(run_dir / "summary.json")
    timing = read_json(run_dir / "timing.json")
    table = Table(title=f"Test accuracy over {n_models} models (95% CI)")
    table.add_column("condition")
    table.add_column("mean", justify="right")
    table.add_column("95% CI", justify="right")
    for name, ci in summary.items():
        lo, hi = ci["ci95"]
        interval = "n/a" if ci["n"] < 2 else f"[{100 * lo:.1f}, {100 * hi:.1f}]"
        table.add_row(name, f"{100 * ci['mean']:.1f}%", interval)
    console.print(table)
    console.print(
        f"{timing['steps']['teacher']} teacher + {timing['steps']['student']} student steps "
        f"in {timing['seconds']['total']:.1f} s",
        highlight=False,
    )
    console.print(f"run folder: {run_dir}", highlight=False, soft_wrap=True)
