"""``sublearn theory``: an empirical check of the paper's Theorem 1 on random MLPs."""

from __future__ import annotations

from pathlib import Path

from sublearn.cli.options import ConfigOption, OutOption, SetOption, console, user_errors
from sublearn.config import load_config

DEFAULT_OUT = Path("runs/theory")


def theory(
    config: ConfigOption = None,
    overrides: SetOption = None,
    out: OutOption = None,
) -> None:
    """Check Theorem 1: one imitation step moves the student toward the teacher.

    Random draws of network, init, teacher objective and student inputs;
    small and large teacher steps; soft-label and squared-error imitation of
    all outputs or auxiliary ones only; then many-step distillation.
    Writes summary.json, draws.csv, multistep.csv and theory.png.
    """
    with user_errors():
        # deferred: torch and matplotlib make `sublearn --help` slow otherwise
        from sublearn.experiments.theory.config import TheoryConfig
        from sublearn.experiments.theory.experiment import multistep_table, run, summary_table

        cfg = load_config(TheoryConfig, config, overrides or [])
        run_dir = out or DEFAULT_OUT
        summary = run(cfg, run_dir, console=console)
        console.print(summary_table(summary))
        if summary["multistep"]["conditions"]:
            console.print(multistep_table(summary))
        console.print(
            f"wrote {run_dir}/summary.json, draws.csv, multistep.csv, theory.png "
            f"in {summary['wall_seconds']:.1f} s"
        )
