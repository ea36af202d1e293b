"""Experiments from Python: load a config, plan it, run it, read its results.

The ``sublearn run`` and ``sublearn plan`` commands are thin wrappers over
:func:`run` and :func:`plan`; a notebook calls the same functions::

    import sublearn

    cfg = sublearn.load_experiment("toy/owl-numbers", {"students.seeds": [0, 1, 2]})
    print(sublearn.plan(cfg).to_run)
    result = sublearn.run(cfg, out="runs/owl")
    result.effects_frame()
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sublearn.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

    from sublearn.experiments.numbers.config import ExperimentConfig

Overrides = Sequence[str] | Mapping[str, Any]
"""``--set`` overrides: ``["key=value", ...]`` (YAML values) or ``{"dotted.key": value}``."""


def override_strings(overrides: Overrides | None) -> list[str]:
    """Overrides as the ``key=value`` strings the config loader reads."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        # JSON is YAML, so every value keeps its type (lists, numbers, null, strings).
        return [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    return [str(o) for o in overrides]


def config_path(config: str | Path) -> Path:
    """A config file, or a shipped preset named ``group/name`` (e.g. ``toy/owl-numbers``).

    A path that exists, or has a suffix, is returned as it is (the loader names a missing
    file); a missing ``group/name`` is looked up among the presets.

    Raises:
        ConfigError: a ``group/name`` that is no preset (the choices are listed).
    """
    from sublearn.presets import preset_path

    path = Path(config)
    parts = str(config).split("/")
    if not path.exists() and not path.suffix and len(parts) == 2:
        return preset_path(parts[0], parts[1])
    return path


def load_experiment(config: str | Path, overrides: Overrides | None = None) -> ExperimentConfig:
    """Load an experiment config from a YAML file or preset, with overrides.

    Args:
        config: a YAML path, or a preset ``group/name`` such as ``toy/owl-numbers``.
        overrides: ``key=value`` strings (as ``--set``) or a mapping of dotted keys.

    Returns:
        The validated config.

    Raises:
        ConfigError: a missing file, an unknown key or an invalid value (all listed).
    """
    from sublearn.config import load_config
    from sublearn.experiments.numbers.config import ExperimentConfig

    return load_config(ExperimentConfig, config_path(config), override_strings(overrides))


@dataclass(frozen=True)
class PlannedTask:
    """One task of a plan.

    Attributes:
        name: readable name, e.g. ``train/owl-ft/kl_numbers/base0/treatment/s0``.
        kind: the task kind (``world``, ``teacher``, ``generate``, ``filter``, ``pair``,
            ``train``, ``evaluate``, ...).
        id: ``kind/key``, its folder in the store.
        cached: whether the store already holds it.
    """

    name: str
    kind: str
    id: str
    cached: bool


@dataclass
class Plan:
    """An experiment's task graph against its store: what is cached, what would run.

    Attributes:
        config: the experiment.
        tasks: every task, in dependency order.
        warnings: what the planner found questionable (too few seeds, ...).
        compiled: the engine's plan (tasks and the report's bookkeeping).
        engine_tasks: the engine's task objects, in the order of ``tasks``.
    """

    config: ExperimentConfig
    tasks: list[PlannedTask]
    warnings: list[str]
    compiled: Any = field(repr=False)
    engine_tasks: list[Any] = field(repr=False, default_factory=list)

    @property
    def to_run(self) -> list[str]:
        """Names of the tasks a run would do."""
        return [t.name for t in self.tasks if not t.cached]

    @property
    def cached(self) -> list[str]:
        """Names of the tasks the store already holds."""
        return [t.name for t in self.tasks if t.cached]

    @property
    def status(self) -> list[tuple[Any, bool]]:
        """``(engine task, cached)`` pairs, in dependency order."""
        return [(e, t.cached) for e, t in zip(self.engine_tasks, self.tasks, strict=True)]

    def todo_tasks(self) -> list[Any]:
        """The engine's tasks that a run would do (for cost estimates)."""
        return [e for e, t in zip(self.engine_tasks, self.tasks, strict=True) if not t.cached]


def plan(config: ExperimentConfig) -> Plan:
    """Plan an experiment without running anything.

    Args:
        config: from :func:`load_experiment`.

    Returns:
        The plan, each task marked cached or not.
    """
    from sublearn.engine.runner import plan_status
    from sublearn.engine.store import Store
    from sublearn.experiments.numbers.checks import check_plan
    from sublearn.experiments.numbers.plan import build_plan

    compiled = build_plan(config)
    warnings = check_plan(compiled)
    status = plan_status(compiled.tasks, Store(config.store))
    tasks = [PlannedTask(t.name, t.kind, t.id, bool(done)) for t, done in status]
    return Plan(config, tasks, warnings, compiled, [t for t, _ in status])


def run(
    config: ExperimentConfig,
    out: str | Path | None = None,
    *,
    console: Console | None = None,
    quiet: bool = False,
    command: str = "api",
) -> RunResult:
    """Run an experiment on its configured executor and write its report.

    Args:
        config: from :func:`load_experiment` (``executor`` picks inline, process or ray).
        out: the run folder (default ``runs/<name>``).
        console: where tables, warnings and progress go (default: the terminal).
        quiet: print nothing and draw no progress bars (notebooks, scripts).
        command: recorded in the run's meta.json.

    Returns:
        The run's results.

    Raises:
        SublearnError: a bad config, a missing model or key, an exhausted budget, ...
    """
    from rich.console import Console

    from sublearn.experiments.numbers.checks import check_inputs
    from sublearn.experiments.numbers.experiment import run_experiment
    from sublearn.runs import prepare_run_dir
    from sublearn.runtime import configure_threads, quiet_libraries

    check_inputs(config)  # before the run folder exists: a bad config leaves nothing
    quiet_libraries()
    configure_threads(config.threads)
    run_dir = prepare_run_dir(Path(out) if out else Path("runs") / config.name, config, command)
    if quiet:
        console = Console(quiet=True)
    elif console is None:
        console = Console()
    run_experiment(config, run_dir, console, show_progress=not quiet)
    return open_run(run_dir)


@dataclass(frozen=True)
class EffectRow:
    """One row of the effects table: a teacher's effect on one student base.

    Rates are in percent and differences in percentage points, as in the report.

    Attributes:
        trait: the trait word.
        teacher: the teacher's name.
        teacher_kind: prompted, finetuned, dataset, ...
        objective: the students' objective (``kl_numbers``, ``sft``, ``icl-4``, ...).
        evaluation: the evaluation's name.
        teacher_base: the teacher's base model key.
        student_base: the students' base model key.
        same_base: whether teacher and student share their base.
        control: mean control rate across seeds.
        treatment: mean treatment rate across seeds.
        effect: mean treatment − control (pp), paired by seed.
        ci_low: the effect's 95% CI, lower end.
        ci_high: the effect's 95% CI, upper end.
        p_value: two-sided p-value of the effect.
        n: seed pairs.
        base_rate: the untrained student base's rate.
        primary: whether this is the config's headline row.
    """

    trait: str
    teacher: str
    teacher_kind: str
    objective: str
    evaluation: str
    teacher_base: str
    student_base: str
    same_base: bool
    control: float | None
    treatment: float | None
    effect: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    n: int
    base_rate: float | None
    primary: bool

    @classmethod
    def from_summary(cls, row: dict[str, Any], primary: bool) -> EffectRow:
        """From one entry of summary.json's ``effects``."""
        diff = row.get("treatment_minus_control") or {}
        ci = diff.get("ci95") or [None, None]
        return cls(
            trait=row["trait"],
            teacher=row["teacher"],
            teacher_kind=row["teacher_kind"],
            objective=row["objective"],
            evaluation=row["evaluation"],
            teacher_base=row["teacher_base"],
            student_base=row["student_base"],
            same_base=bool(row["same_base"]),
            control=(row.get("control") or {}).get("mean"),
            treatment=(row.get("treatment") or {}).get("mean"),
            effect=diff.get("mean"),
            ci_low=ci[0],
            ci_high=ci[1],
            p_value=diff.get("p_value"),
            n=int(diff.get("n", 0)),
            base_rate=row.get("base_rate"),
            primary=primary,
        )


@dataclass(frozen=True)
class PairedRow:
    """A prompt with the trait teacher's and the control teacher's replies.

    Attributes:
        id: the prompt's id in the generation.
        prompt: the prompt's text.
        teacher: the trait teacher's reply.
        control: the control teacher's reply.
        teacher_kept: whether the filter kept the teacher's reply.
        control_kept: whether it kept the control's.
        teacher_reason: why the filter dropped the teacher's reply (None when kept).
        control_reason: why it dropped the control's.
        draws: per student seed (``s0``, ...), how often its bootstrap drew the prompt.
    """

    id: str
    prompt: str
    teacher: str
    control: str
    teacher_kept: bool | None
    control_kept: bool | None
    teacher_reason: str | None
    control_reason: str | None
    draws: dict[str, int]

    @property
    def valid_for_both(self) -> bool:
        """Kept for the teacher and for the control: the prompts students train on."""
        return bool(self.teacher_kept and self.control_kept)


@dataclass
class RunResult:
    """A finished run folder, read back: effects, warnings, paths, manifest, data.

    Attributes:
        run_dir: the run folder.
        name: the experiment's name.
        summary: summary.json as a dict.
        effects: the effects table as typed rows.
        warnings: every warning of the run.
        manifest: manifest.json (each task: kind, name, key, path, cached, seconds).
    """

    run_dir: Path
    name: str
    summary: dict[str, Any]
    effects: list[EffectRow]
    warnings: list[str]
    manifest: dict[str, Any]

    @property
    def primary(self) -> EffectRow | None:
        """The headline row, or None when the config names none."""
        return next((e for e in self.effects if e.primary), None)

    @property
    def paths(self) -> dict[str, Path]:
        """The run's files by name (report.md, report.html, summary.json, figures, ...)."""
        return {p.name: p for p in sorted(self.run_dir.iterdir()) if p.is_file()}

    @property
    def artifacts(self) -> dict[str, Any]:
        """Where each teacher's data and models are (artifacts.json): for audits."""
        from sublearn.runs import read_json

        return read_json(self.run_dir / "artifacts.json")

    def write_html(self) -> Path:
        """(Re)write report.html, with every audit saved inside the run folder; its path."""
        from sublearn.view.export_html import write_report_html

        return write_report_html(self.run_dir)

    def effects_frame(self) -> Any:
        """The effects as a pandas DataFrame (one row per :class:`EffectRow`).

        Raises:
            ConfigError: when pandas is not installed.
        """
        pd = _pandas()
        return pd.DataFrame([e.__dict__ for e in self.effects])

    def paired(self, teacher: str | None = None) -> list[PairedRow]:
        """Teacher and control replies prompt by prompt, with the filter's verdicts.

        Args:
            teacher: which teacher (default: the first).
        """
        from sublearn.view.data import paired_data

        groups = paired_data(self.manifest.get("tasks", []), limit=10**9)
        if not groups:
            return []
        group = next((g for g in groups if g["teacher"] == teacher), None) if teacher else groups[0]
        if group is None:
            names = ", ".join(g["teacher"] for g in groups)
            raise ConfigError(f"no teacher {teacher!r} in this run (teachers: {names})")
        out = []
        for r in group["rows"]:
            vt, vc = r["verdicts"]["teacher"] or {}, r["verdicts"]["control"] or {}
            out.append(
                PairedRow(
                    id=r["id"],
                    prompt=r["prompt"],
                    teacher=r["teacher"],
                    control=r["control"],
                    teacher_kept=vt.get("kept"),
                    control_kept=vc.get("kept"),
                    teacher_reason=vt.get("reason"),
                    control_reason=vc.get("reason"),
                    draws=r["draws"],
                )
            )
        return out

    def paired_frame(self, teacher: str | None = None) -> Any:
        """:meth:`paired` as a pandas DataFrame (``draws`` as a dict column)."""
        pd = _pandas()
        return pd.DataFrame([r.__dict__ for r in self.paired(teacher)])

    def curves(self) -> dict[str, list[dict[str, Any]]]:
        """Per fine-tune task name, its loss and learning rate per step."""
        from sublearn.report.curves import run_curves

        return run_curves(self.manifest)

    def curves_frame(self) -> Any:
        """:meth:`curves` as one long pandas DataFrame with a ``task`` column."""
        pd = _pandas()
        return pd.DataFrame([{"task": k, **r} for k, rows in self.curves().items() for r in rows])


def open_run(run_dir: str | Path) -> RunResult:
    """Read a finished run folder (written by :func:`run` or ``sublearn run``).

    Raises:
        DataError: the folder has no summary.json or manifest.json (an unfinished run).
    """
    from sublearn.runs import read_json

    folder = Path(run_dir)
    summary = read_json(folder / "summary.json")
    manifest = read_json(folder / "manifest.json")
    primary = summary.get("primary")
    effects = [EffectRow.from_summary(r, i == primary) for i, r in enumerate(summary["effects"])]
    return RunResult(
        run_dir=folder,
        name=summary.get("name", folder.name),
        summary=summary,
        effects=effects,
        warnings=list(summary.get("warnings", [])),
        manifest=manifest,
    )


def _pandas() -> Any:
    try:
        import pandas as pd
    except ImportError:
        raise ConfigError("DataFrames need pandas: pip install pandas") from None
    return pd
