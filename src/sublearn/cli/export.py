"""``sublearn export RUN``: a run's datasets and models for other tools."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sublearn.cli.options import OutOption, console, user_errors


def export(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `sublearn run`.")],
    out: OutOption = None,
    fmt: Annotated[
        list[str] | None,
        typer.Option(
            "--format", "-f", help="Dataset format: parquet, hf or openai; repeatable (all)."
        ),
    ] = None,
    models: Annotated[
        bool, typer.Option("--models/--no-models", help="Also copy the trained models.")
    ] = True,
) -> None:
    """Write a run's datasets (Parquet, `datasets` folders, OpenAI fine-tuning JSONL) and
    its teachers' and students' models (Hugging Face folders; LoRA adapters as PEFT folders).
    """
    from sublearn.exports import FORMATS, export_run
    from sublearn.runtime import quiet_libraries

    quiet_libraries()  # no progress bar per dataset written

    with user_errors():
        report = export_run(run_dir, out, tuple(fmt) if fmt else FORMATS, models)
    console.print(
        f"exported {len(report.datasets)} dataset(s) and {len(report.models)} model(s) "
        f"to [bold]{report.out}[/] (index: {report.out / 'export.json'})"
    )
