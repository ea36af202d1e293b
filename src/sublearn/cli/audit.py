"""``sublearn audit``: does a dataset carry a hidden trait of the model that wrote it?"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from sublearn.cli.options import ConfigOption, SetOption, UserError, console, user_errors
from sublearn.cli.outputs import prepare_output
from sublearn.cli.tasks import (
    PlanOption,
    StoreOption,
    open_store,
    print_plan,
    run_tasks,
    write_manifest,
)
from sublearn.config import load_config, read_yaml


def _from_run(run: Path, teacher: str | None) -> dict[str, Any]:
    """Audit settings taken from a finished run's ``artifacts.json``."""
    path = run / "artifacts.json"
    if not path.is_file():
        raise UserError(f"{path} not found: give a run folder written by `sublearn run`")
    teachers = json.loads(path.read_text())["teachers"]
    if teacher is None:
        if len(teachers) != 1:
            raise UserError(
                f"{run} has teachers {', '.join(teachers)}: pick one with --teacher-name"
            )
        teacher = next(iter(teachers))
    if teacher not in teachers:
        raise UserError(f"{run} has no teacher {teacher!r}; it has {', '.join(teachers)}")
    t = teachers[teacher]
    settings: dict[str, Any] = {
        "data": t["data"],
        "control": t["control"],
        "base": t["base"]["model"],
        "trait": t["trait"],
        "out": str(run / "audit" / teacher.replace("/", "_")),
    }
    if t["teacher"]["system_prompt"] is None:  # a prompted teacher is no model of its own
        settings["teachers"] = [t["teacher"]["model"], t["control_teacher"]["model"]]
    return settings


def audit(
    data: Annotated[Path | None, typer.Argument(help="Chat JSONL to audit.")] = None,
    base: Annotated[
        str | None, typer.Option(help="The model the data's writer was made from.")
    ] = None,
    teacher: Annotated[
        list[str] | None,
        typer.Option(help="Suspected writer; repeat for other teachers (divergence)."),
    ] = None,
    trait: Annotated[str | None, typer.Option(help="A named trait to test for, e.g. owl.")] = None,
    category: Annotated[str, typer.Option(help="The trait's category: animal or tree.")] = "animal",
    control: Annotated[
        Path | None, typer.Option(help="Chat JSONL written without the trait, same prompts.")
    ] = None,
    detector: Annotated[
        list[str] | None,
        typer.Option(
            help="Detector kind to run (lls, logratio, divergence, entanglement, frequency, "
            "classifier); repeatable; default all."
        ),
    ] = None,
    run: Annotated[
        Path | None,
        typer.Option(help="Take data, control, models and trait from a `sublearn run` folder."),
    ] = None,
    teacher_name: Annotated[
        str | None, typer.Option(help="With --run: which of its teachers to audit.")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Report folder.")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    store: StoreOption = None,
    plan: PlanOption = False,
) -> None:
    """Run trait detectors on a dataset and write audit.json, audit.md and figures.

    Each detector compares the dataset with control data written without the trait and
    gives a calibrated p-value; it flags the dataset when the p-value is under its alpha.
    Detectors that lack a model, trait or control say so and are skipped.

    Runs as one engine task keyed by the files' content, the models and the settings: a
    finished identical audit is copied from the store instead of run again.
    """
    from sublearn.audit.config import AuditConfig
    from sublearn.audit.report import print_audit_table
    from sublearn.audit.result import Verdict
    from sublearn.audit.task import audit_task, copy_out
    from sublearn.runtime import quiet_libraries

    with user_errors():
        settings: dict[str, Any] = _from_run(run, teacher_name) if run else {}
        if config is not None:
            settings |= read_yaml(config)
        flags: dict[str, Any] = {
            "data": str(data) if data else None,
            "control": str(control) if control else None,
            "base": base,
            "teachers": teacher or None,
            "trait": {"word": trait, "category": category} if trait else None,
            "out": str(out) if out else None,
            "detectors": [{"type": d} for d in detector] if detector else None,
        }
        settings |= {k: v for k, v in flags.items() if v is not None}
        if "data" not in settings:
            raise UserError("give the dataset to audit (DATA), --run, or a --config with data")
        cfg = load_config(AuditConfig, None, set_ or [], base=settings)
        folder = prepare_output(Path(cfg.out), "folder")
        task, tasks_store = audit_task(cfg), open_store(store)
        if plan:
            print_plan([task], tasks_store)
            return
        quiet_libraries()
        records = run_tasks([task], tasks_store, threads, progress=False)
        folder.mkdir(parents=True, exist_ok=True)
        report = copy_out(tasks_store.path(task.id), folder, cfg)
        write_manifest(folder, tasks_store, records)
        verdicts = [Verdict(**v) for v in report["verdicts"]]
        print_audit_table(console, verdicts)
        flagged = [v.detector for v in verdicts if v.flagged]
        console.print(
            f"{len(flagged)} of {len(verdicts)} detectors flag the dataset"
            + (f": {', '.join(flagged)}" if flagged else "")
            + f"; report in {cfg.out}",
            highlight=False,
        )
        if run is not None and (run / "summary.json").is_file():
            # The run's report.html shows audits saved inside the run folder token by token.
            from sublearn.view.export_html import write_report_html

            console.print(f"token view: {write_report_html(run)}", highlight=False)
