"""Run a numbers experiment through the engine and turn the store's outputs into a report."""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rich.console import Console

from sublearn.backends.pricing import merge_usage, usage_cost, usd
from sublearn.backends.probe import probe_usage
from sublearn.engine.executors import make_executor
from sublearn.engine.runner import TaskRecord, plan_status, run_plan
from sublearn.engine.store import Store
from sublearn.errors import BudgetError, ConfigError
from sublearn.experiments.numbers.checks import check_plan
from sublearn.experiments.numbers.config import ExperimentConfig
from sublearn.experiments.numbers.costs import (
    ESTIMATE_TITLE,
    UNREAD_SOURCES,
    estimate_usage,
    print_cost_table,
)
from sublearn.experiments.numbers.plan import Plan, build_plan
from sublearn.experiments.numbers.servers import check_servers
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
    status = plan_status(plan.tasks, store)
    todo = [t for t, done in status if not done]
    console.print(f"{len(status) - len(todo)} of {len(status)} tasks cached, {len(todo)} to run")
    # Before any request: the cost, the budget, the keys.
    estimate = estimate_usage(todo, cfg.providers.openai.samples_per_request)
    for note in dict.fromkeys(UNREAD_SOURCES):
        console.print(f"[yellow]warning:[/] {note}", highlight=False)
    if estimate:
        cost = print_cost_table(console, estimate, cfg.pricing, ESTIMATE_TITLE)
        if cfg.budget_usd is not None and cost > cfg.budget_usd:
            raise BudgetError(
                f"the run's estimated cost, {usd(cost)}, exceeds budget_usd "
                f"{usd(cfg.budget_usd)}: raise the budget or shrink the run (no request was sent)"
            )
    require_keys(cfg)
    probes: dict[str, Any] = {}
    if todo:  # a finished run needs no server
        before = probe_usage()
        for note in check_servers(cfg, strict=True):
            console.print(f"[yellow]note:[/] {note}", highlight=False)
        probes = _usage_since(before, probe_usage())
    started = time.perf_counter()
    try:
        records = run_plan(
            plan.tasks,
            store,
            make_executor(cfg.executor, cfg.threads),
            console=console,
            show_progress=show_progress,
            on_record=_spending_guard(cfg),
            group=cfg.batch_students,
        )
    finally:
        _stop_servers()
    wall = time.perf_counter() - started
    # Corrupt entries that were moved aside and recomputed: said once more in the report.
    warnings = warnings + store.repaired
    return write_run_report(plan, store, records, run_dir, console, warnings, wall, probes=probes)


def require_keys(cfg: ExperimentConfig) -> None:
    """Fail at once when an API model's key is missing from the environment.

    Raises:
        ConfigError: naming the variable to set.
    """
    from sublearn.backends.refs import ModelRef

    for key, ref in cfg.models.items():
        if not ref.startswith("toy:") and ModelRef.parse(ref).provider == "openai":
            try:
                cfg.providers.openai.api_key()
            except ConfigError as err:
                raise ConfigError(f"models.{key} ({ref}): {err}") from None


def _usage_since(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The usage counted in ``after`` and not yet in ``before``."""
    since = {}
    for model, counts in after.items():
        was = before.get(model, {})
        delta = {k: n - was.get(k, 0) for k, n in counts.items() if n - was.get(k, 0)}
        if delta:
            since[model] = delta
    return since


def _spending_guard(cfg: ExperimentConfig) -> Callable[[TaskRecord], None]:
    """Stop the run once the tasks it ran have spent more than ``budget_usd``."""
    spent: list[dict[str, Any]] = []

    def check(record: TaskRecord) -> None:
        if cfg.budget_usd is None or record.cached or not record.result.get("usage"):
            return
        spent.append(record.result["usage"])
        cost, _ = usage_cost(merge_usage(spent), cfg.pricing)
        if cost > cfg.budget_usd:
            raise BudgetError(
                f"this run has spent {usd(cost)}, over budget_usd {usd(cfg.budget_usd)}; "
                "stopped. Finished tasks are kept: rerun with a higher budget to go on."
            )

    return check


def _stop_servers() -> None:
    """Stop the vLLM servers this process started (if the provider was used at all)."""
    import sys

    module = sys.modules.get("sublearn.backends.vllm_server")
    if module is not None:
        module.shutdown_all()


def write_run_report(
    plan: Plan,
    store: Store,
    records: dict[str, TaskRecord],
    run_dir: Path,
    console: Console,
    warnings: list[str],
    wall_seconds: float | None = None,
    probes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Collect the finished tasks' outputs into summary.json, report.md and figures.

    ``probes`` is the usage of the plan-time server checks this run sent (see
    :mod:`sublearn.backends.probe`): paid requests of no task, counted in the API usage.
    """
    from sublearn.report.coverage import coverage_warnings
    from sublearn.report.experiment import write_experiment_report

    atomic_write_json(
        run_dir / "manifest.json",
        {"store": str(store.root), "tasks": [r.to_dict() for r in records.values()]},
    )
    atomic_write_json(run_dir / "artifacts.json", run_artifacts(plan, store))
    pair_results = {name: records[task.id].result for name, task in plan.pairs.items()}
    observations = []
    undefined: list[str] = []
    for obs in plan.observations:
        metrics = _metrics(store, obs.task.id)
        for evaluation, result in readings_of(metrics, obs.meta["trait"], obs.meta["evaluation"]):
            if result["rate"] is None or math.isnan(result["rate"]):
                # e.g. a free-form evaluation whose answers were all CODE or REFUSAL: a rate
                # over nothing is no 0 and must not pass for one.
                undefined.append(
                    obs.task.name
                    if evaluation == obs.meta["evaluation"]
                    else f"{obs.task.name} ({evaluation})"
                )
                continue
            observations.append(
                {
                    **{k: v for k, v in obs.meta.items() if k != "pair"},
                    **result,
                    "evaluation": evaluation,
                    "rows": pair_results[obs.meta["pair"]]["rows"],
                }
            )
    references = []
    for ref in plan.references:
        metrics = _metrics(store, ref.task.id)
        if "metric" in metrics:  # an EvalResult: one value per target or "overall"
            traits = [ref.meta["trait"]] if "trait" in ref.meta else _traits_of(plan, ref.meta)
            for trait in traits:
                value = observed(metrics, trait)
                references.append({**ref.meta, "trait": trait, "rate": value["rate"]})
            continue
        for trait in metrics:
            if ref.meta.get("trait", trait) == trait:
                for evaluation, value in readings_of(metrics, trait, ref.meta["evaluation"]):
                    references.append(
                        {
                            **ref.meta,
                            "trait": trait,
                            "evaluation": evaluation,
                            "rate": value["rate"],
                        }
                    )
    filter_reports = {
        name: json.loads((store.path(task.id) / "report.json").read_text())
        for name, task in plan.filters.items()
    }
    rows_per_condition = [
        {"pair": name, **{k: v for k, v in r.items() if k != "warnings"}}
        for name, r in pair_results.items()
    ]
    all_warnings = list(warnings)
    coverage = _coverage(plan, store)
    all_warnings.extend(coverage_warnings(coverage))
    if undefined:
        all_warnings.append(
            f"{len(undefined)} student evaluation(s) have no value (nothing scored, e.g. every "
            f"free-form answer CODE or REFUSAL) and are left out of the effects: "
            f"{', '.join(undefined[:5])}{' ...' if len(undefined) > 5 else ''}"
        )
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
    checks = TaskRecord("probe", "server checks", "", "", False, 0.0, {"usage": probes or {}})
    api_usage = api_usage_summary([*records.values(), checks], plan.cfg.pricing)
    for model in api_usage.get("unpriced", []):
        all_warnings.append(f"no price for {model} in `pricing`: its cost is not counted")
    summary = write_experiment_report(
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
        api_usage=api_usage,
        coverage=coverage,
        worlds=_worlds(plan, store),
    )
    if plan.cfg.defences:
        summary["defences"] = _defences_report(plan, store, records, observations, run_dir, console)
        atomic_write_json(run_dir / "summary.json", summary)
    _write_extras(run_dir)
    return summary


def _worlds(plan: Plan, store: Store) -> list[dict[str, Any]]:
    """Each toy world of the run: its store id, its bases' weight digests, where it was built."""
    from sublearn.toy.world import read_manifest

    worlds = []
    for name, task in plan.worlds.items():
        manifest = read_manifest(store.path(task.id)) or {}
        bases = [
            {"name": b["name"], "sha256": b.get("sha256"), "final_loss": b.get("final_loss")}
            for b in manifest.get("bases", [])
        ]
        worlds.append(
            {"name": name, "key": task.id, "bases": bases, "numerics": manifest.get("numerics")}
        )
    return worlds


def _write_extras(run_dir: Path) -> None:
    """The training curves' figure and the self-contained report.html of the run."""
    from sublearn.report.curves import append_curves_section, curves_figure, run_curves
    from sublearn.runs import read_json
    from sublearn.view.export_html import write_report_html

    if curves_figure(run_curves(read_json(run_dir / "manifest.json")), run_dir / "curves.png"):
        append_curves_section(run_dir / "report.md")
    write_report_html(run_dir)


def _defences_report(
    plan: Plan,
    store: Store,
    records: dict[str, TaskRecord],
    observations: list[dict[str, Any]],
    run_dir: Path,
    console: Console,
) -> list[dict[str, Any]]:
    """The defence table: in summary.json, report.md, defences.png and on the console."""
    from sublearn.report.defences import (
        defence_figure,
        defence_lines,
        defence_table,
        print_defences,
    )
    from sublearn.runs import atomic_write_text

    losses = [{**obs.meta, "loss": _metrics(store, obs.task.id)["loss"]} for obs in plan.losses]
    cleaning: dict[str, dict[str, int]] = {}
    for name, task in plan.defends.items():
        defence = name.split("/")[-2]
        into = cleaning.setdefault(defence, defaultdict(int))
        for condition in records[task.id].result.values():
            for key in ("rows_in", "rows_out", "characters_masked", "reply_characters"):
                into[key] += condition[key]
    rows = defence_table(observations, losses, cleaning)
    report = run_dir / "report.md"
    text = report.read_text().rstrip("\n")
    atomic_write_text(report, text + "\n\n" + "\n".join(defence_lines(rows)) + "\n")
    defence_figure(rows, run_dir / "defences.png")
    print_defences(rows, console)
    return rows


def run_artifacts(plan: Plan, store: Store) -> dict[str, Any]:
    """Where each teacher's filtered data and models are, for ``sublearn audit --run``.

    A model is a folder in the store or an external reference; a prompted teacher is
    its base plus a system prompt (``system_prompt``), not a model of its own.
    """

    def where(source: Any) -> dict[str, Any]:
        path = str(store.path(source.task.id) / source.sub) if source.task else source.ref
        return {"model": path, "system_prompt": source.system_prompt}

    teachers = {}
    for spec in plan.cfg.teachers:
        name = spec.label()
        sources = plan.sources[name]
        teachers[name] = {
            "trait": spec.trait.model_dump(mode="json"),
            "kind": spec.kind.type,
            "data": str(store.path(plan.filters[name].id) / "accepted.jsonl"),
            "control": str(store.path(plan.filters[f"{name}/control"].id) / "accepted.jsonl"),
            **{role: where(src) for role, src in sources.items()},
        }
    return {"store": str(store.root), "teachers": teachers}


_COUNTERS = ("requests", "logged", "input_tokens", "output_tokens", "training_tokens")


def api_usage_summary(records: Iterable[TaskRecord], pricing: dict[str, Any]) -> dict[str, Any]:
    """Requests, tokens and USD of API models over a run's tasks; {} when none used one.

    ``total_usd`` counts every task whose result the report uses (cached ones cost what
    they cost when they ran); ``this_run_usd`` only the tasks this run ran.
    """
    records = list(records)
    total = merge_usage(r.result.get("usage", {}) for r in records)
    if not total:
        return {}
    now = merge_usage(r.result.get("usage", {}) for r in records if not r.cached)
    groups: dict[str, list[str]] = defaultdict(list)
    for model in total:
        # Thirty students are thirty fine-tuned models: one row for all fine-tunes of a base.
        parts = model.split(":")
        group = ":".join(parts[:3]) + ":*" if parts[1:2] == ["ft"] and len(parts) > 3 else model
        groups[group].append(model)
    by_model = []
    for group, models in sorted(groups.items()):
        summed = {k: sum(total[m].get(k, 0) for m in models) for k in _COUNTERS}
        cost, unpriced = usage_cost({m: total[m] for m in models}, pricing)
        by_model.append(
            {"model": group, "models": len(models), **summed, "usd": None if unpriced else cost}
        )
    total_cost, unpriced = usage_cost(total, pricing)
    return {
        "by_model": by_model,
        "total_usd": round(total_cost, 4),
        "this_run_usd": round(usage_cost(now, pricing)[0], 4),
        "unpriced": unpriced,
    }


def observed(metrics: dict[str, Any], trait: str) -> dict[str, Any]:
    """What an evaluation's metrics.json says about one trait: its rate, and more.

    A preference result is keyed by target; an :class:`EvalResult` has one value per
    target (stories, choice) or an ``overall`` value (freeform, truthfulqa, mmlu), whose
    metric name travels with it.
    """
    if "metric" not in metrics:
        return {"rate": metrics[trait]["rate"], "per_question": metrics[trait]["per_question"]}
    values = metrics["values"]
    value = values[trait] if trait in values else values.get("overall")
    value = math.nan if value is None else value  # JSON keeps NaN as null
    per_question = metrics.get("secondary", {}).get("by_question", {})
    return {"rate": value, "per_question": list(per_question.values()), "metric": metrics["metric"]}


def readings_of(
    metrics: dict[str, Any], trait: str, evaluation: str
) -> list[tuple[str, dict[str, Any]]]:
    """The values an effects table compares for one evaluation, each under its own name.

    Every evaluation gives its rate under its own name. A preference evaluation that read
    the model in more than one place (the reply's start and after a lead-in) adds each
    other reading's rate (``favorite@start``) and every reading's rate renormalized over
    the category's answers (``favorite@lead_in/renormalized``): a trait may move in one
    place and not the other, and a weak model's raw rate may read little (see the
    coverage), so the report compares students on each.
    """
    main = observed(metrics, trait)
    out = [(evaluation, main)]
    entry: dict[str, Any] = {} if "metric" in metrics else metrics[trait]
    readings: dict[str, dict[str, Any]] = entry.get("readings") or {}
    if len(readings) < 2:
        return out
    for name, reading in readings.items():
        if name != entry.get("reading"):
            out.append((f"{evaluation}@{name}", {"rate": reading["rate"], "per_question": []}))
    for name, reading in readings.items():
        value = reading.get("renormalized")
        out.append(
            (
                f"{evaluation}@{name}/renormalized",
                {"rate": math.nan if value is None else value, "per_question": []},
            )
        )
    return out


def _coverage(plan: Plan, store: Store) -> list[dict[str, Any]]:
    """Every preference evaluation's coverage of its category, references first."""
    from sublearn.report.coverage import coverage_row

    rows = []
    for obs in [*plan.references, *plan.observations]:
        metrics = _metrics(store, obs.task.id)
        if "metric" in metrics:
            continue
        for trait, entry in metrics.items():
            if obs.meta.get("trait", trait) == trait and "coverage" in entry:
                rows.append(coverage_row(obs.meta, trait, entry))
    return rows


def _traits_of(plan: Plan, meta: dict[str, Any]) -> list[str]:
    """The trait words a base model's evaluation is read for (those it measures)."""
    from sublearn.experiments.numbers.config import measures

    ecfg = plan.cfg.evaluations[meta["evaluation"]]
    return sorted({t.trait.word for t in plan.cfg.teachers if t.trait.category in measures(ecfg)})


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
