"""``sublearn defend``: write a cleaned copy of a chat dataset (rows dropped, spans masked)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from sublearn.cli.options import ConfigOption, SetOption, console, user_errors
from sublearn.cli.tasks import PlanOption, StoreOption, open_store, print_plan, run_tasks
from sublearn.config import deep_merge, format_validation_error, parse_overrides, read_yaml
from sublearn.defend.config import DefendConfig
from sublearn.errors import ConfigError

# Stats every defence reports, shown in their own columns rather than among its effects.
_ROW_COUNTS = ("rows_in", "rows_out")


def load_defend_config(
    config: Path | None, flags: dict[str, Any], overrides: list[str]
) -> DefendConfig:
    """The config from its file, then the command-line flags, then ``--set`` overrides.

    ``flags`` replace what the file says (a ``defences`` list replaces the file's list,
    so that ``--defence`` names the whole sequence); ``--set`` can then adjust the
    result, e.g. ``--set defences.0.fraction=0.2``.

    Raises:
        ConfigError: naming every invalid key and where the data came from.
    """
    data = deep_merge(read_yaml(config) if config is not None else {}, flags)
    data = deep_merge(data, parse_overrides(overrides))
    try:
        return DefendConfig.model_validate(data)
    except ValidationError as err:
        source = str(config) if config is not None else "config"
        source += " with command-line options" if flags or overrides else ""
        raise ConfigError(format_validation_error(err, source, DefendConfig)) from None


def _effects(stats: dict[str, Any]) -> str:
    parts = []
    for key, value in stats.items():
        if key in _ROW_COUNTS or value is None or value == {}:
            continue
        if isinstance(value, float):
            value = f"{value:.3g}"
        elif isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items())
        parts.append(f"{key.replace('_', ' ')} {value}")
    return "; ".join(parts)


def defend(
    data: Annotated[Path, typer.Argument(help="Chat JSONL to clean.")],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Cleaned JSONL to write (report: <out>.report.json)."),
    ] = None,
    base: Annotated[
        str | None, typer.Option(help="Model the data's writer was made from (drop_lls, logratio).")
    ] = None,
    teacher: Annotated[
        str | None, typer.Option(help="Model that wrote the data (mask/replace_logratio).")
    ] = None,
    trait: Annotated[
        str | None, typer.Option(help="Suspected trait word, e.g. owl (drop_lls).")
    ] = None,
    defence: Annotated[
        list[str] | None,
        typer.Option(
            "--defence",
            "-d",
            help="A defence with its default settings, e.g. canonicalize; repeatable, applied "
            "in order; replaces the config file's list.",
        ),
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda[:N].")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads.")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    store: StoreOption = None,
    plan: PlanOption = False,
) -> None:
    """Drop, mask or rewrite the parts of a dataset most likely to carry a hidden trait.

    Runs as one engine task keyed by the file's content, the models and the defences: a
    finished identical call is copied from the store instead of run again.
    """
    from sublearn.cli.outputs import prepare_output
    from sublearn.defend.run import report_path, uses_models
    from sublearn.defend.task import copy_out, defend_task

    with user_errors():
        flags: dict[str, Any] = {"data": str(data)}
        if out is not None:
            flags["out"] = str(out)
        flags |= {k: v for k, v in (("base", base), ("teacher", teacher)) if v is not None}
        if device is not None:
            flags["device"] = device
        if trait is not None:
            flags["trait"] = {"word": trait}
        if defence:
            flags["defences"] = [{"type": kind} for kind in defence]
        cfg = load_defend_config(config, flags, set_ or [])
        prepare_output(Path(cfg.out), "file")
        task, tasks_store = defend_task(cfg), open_store(store)
        if plan:
            print_plan([task], tasks_store)
            return
        if uses_models(cfg):
            from sublearn.runtime import quiet_libraries

            quiet_libraries()
        run_tasks([task], tasks_store, threads, progress=False)
        report = copy_out(tasks_store.path(task.id), cfg)

        table = Table("#", "defence", "rows in", "rows out", "effect", title="defences")
        for at, step in enumerate(report["defences"]):
            stats = step["stats"]
            table.add_row(
                str(at),
                step["type"],
                str(stats["rows_in"]),
                str(stats["rows_out"]),
                _effects(stats),
            )
        console.print(table)
        console.print(
            f"wrote {cfg.out}: {report['rows_out']} of {report['rows_in']} rows, "
            f"{report['characters_masked']} of {report['reply_characters']} reply characters "
            f"masked; report {report_path(cfg.out)}",
            highlight=False,
            soft_wrap=True,
        )
