"""The task kinds of the language-model experiments: thin adapters from a task's context
(typed params, input folders, an output folder) to the stage functions that do the work.

Each function gets its kind's params model (engine/params.py), validated from the stored
task; it writes only into ``ctx.out`` (renamed into the store when it returns) and
``ctx.state`` (kept across interruptions), and returns a small JSON-able result that the
done-marker records. The work itself lives in the stages: the teacher recipe in
experiments/numbers/teachers.py, fine-tuning jobs in finetune/jobs.py, filtering and checks
in filters/stage.py, pairing in experiments/numbers/pairing.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sublearn.backends.pricing import merge_usage
from sublearn.engine.params import (
    DefendParams,
    EvaluateParams,
    FilterParams,
    GenerateParams,
    LossParams,
    ModelInput,
    ModelSource,
    PairParams,
    Speed,
    TeacherParams,
    TrainParams,
    WorldParams,
)
from sublearn.engine.task import TaskContext
from sublearn.errors import DataError

# Written beside constrained data only, so unconstrained outputs are as before.
_DECODING = "decoding.json"


# ------------------------------------------------------------------------ models


def model_path(ctx: TaskContext, source: ModelSource) -> str:
    """The folder or reference of a model given as task params (see ModelSource.param)."""
    if isinstance(source, ModelInput):
        return str(ctx.inputs[source.input] / source.sub)
    return source.ref


def model_ref(ctx: TaskContext, source: ModelSource) -> Any:
    """The model of task params as a reference, served by ``source.serve`` if given.

    A student trained locally on a ``vllm:`` base is a local adapter folder; ``serve``
    sends it back to vLLM for inference.
    """
    from sublearn.backends.refs import ModelRef

    ref = ModelRef.parse(model_path(ctx, source))
    serve = source.serve if isinstance(source, ModelInput) else None
    if serve and ref.provider == "hf" and serve != "hf":
        ref = ModelRef(serve, ref.name, ref.adapter)
    return ref


@contextmanager
def _opened(
    ctx: TaskContext,
    p: Speed,
    source: ModelSource | str,
    usage: dict[str, Any],
    batch_size: int | None = None,
    dtype: str = "auto",
) -> Iterator[Any]:
    """The model's backend, from the provider registry (one model resident at a time).

    API and vLLM backends log every answered request in the task's state folder, so a
    killed task resumes without sending a request twice. On exit the backend is closed
    and what it spent (API backends count tokens) is added to ``usage``.
    """
    from sublearn.backends.refs import ModelRef
    from sublearn.backends.registry import open_backend

    ref = ModelRef.parse(source) if isinstance(source, str) else model_ref(ctx, source)
    options: dict[str, Any] = {
        "device": p.device,
        "dtype": dtype,
        "batch_size": p.batch_size if batch_size is None else batch_size,
    }
    if ref.provider in ("openai", "vllm"):
        options["settings"] = p.providers.get(ref.provider, {})
        options["request_log"] = ctx.state / "requests.jsonl"
    backend = open_backend(ref, **options)
    try:
        yield backend
    finally:
        spent = getattr(backend, "usage", None)
        if spent is not None:
            usage.update(merge_usage([usage, {backend.name: spent}]))
        backend.close()


def _with_usage(result: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
    return {**result, **({"usage": usage} if usage else {})}


# ------------------------------------------------------------------------- kinds


def run_world(ctx: TaskContext, p: WorldParams) -> dict[str, Any]:
    """Build a toy world (its base models and tokenizer) into the output folder."""
    from sublearn.toy.world import build_world

    bases = build_world(p.world_config(), ctx.out, force=True, progress=False)
    return {"bases": [b.name for b in bases]}


def run_teacher(ctx: TaskContext, p: TeacherParams) -> dict[str, Any]:
    """Fine-tune a teacher (trait or matched control) from its base on its demonstrations."""
    from sublearn.experiments.numbers.teachers import write_demonstrations

    base = model_path(ctx, p.base)
    usage: dict[str, Any] = {}
    demonstrations = ctx.out / "demonstrations.jsonl"
    note = write_demonstrations(
        p,
        base,
        ctx.inputs.get("world"),
        demonstrations,
        lambda: _opened(ctx, p, base, usage),
    )
    metrics = _finetune(ctx, p, base, demonstrations, p.finetune)
    if "usage" in metrics:
        metrics["usage"] = merge_usage([usage, metrics["usage"]])
    elif usage:
        metrics["usage"] = usage
    return {**note, **metrics}


def _finetune(
    ctx: TaskContext,
    p: Speed,
    base: str,
    data: Any,
    cfg: Any,
    teacher: ModelSource | None = None,
) -> dict[str, Any]:
    """Fine-tune into ``ctx.out/model`` through a job that survives a kill."""
    from sublearn.finetune.jobs import run_job

    metrics = run_job(
        base,
        data,
        cfg.model_copy(update={"device": p.device}),
        state=ctx.state,
        out=ctx.out,
        teacher=model_path(ctx, teacher) if teacher is not None else None,
        teacher_system_prompt=teacher.system_prompt if teacher is not None else None,
        openai=p.providers.get("openai", {}),
        label=ctx.spec.name,
        progress=ctx.progress,
    )
    if (ctx.out / "model" / "train_metrics.json").is_file():
        _tensorboard(ctx, p)
    return metrics


def _tensorboard(ctx: TaskContext, p: Speed) -> None:
    """Copy the task's training curve into TensorBoard event files when the run asks."""
    if not p.tensorboard:
        return
    from sublearn.finetune.curves import CURVES_FILE, read_curves, write_tensorboard

    curves = read_curves(ctx.out / "model" / CURVES_FILE)
    if curves:
        write_tensorboard(curves, ctx.out / "tensorboard", tag=ctx.spec.name)


def run_generate(ctx: TaskContext, p: GenerateParams) -> dict[str, Any]:
    """A teacher answers the experiment's prompts (resumable row by row)."""
    from sublearn.generation.config import GenerationConfig
    from sublearn.generation.stage import generate_dataset
    from sublearn.prompts.kinds import prompt_rows

    prompts = [row.text for row in prompt_rows(p.prompts)]
    gcfg = GenerationConfig(
        **p.sampling.model_dump(), batch_size=p.batch_size, chunk_size=p.chunk_size
    )
    grammars = None
    if gcfg.constrained:
        from sublearn.prompts.number_grammar import NumberGrammar
        from sublearn.prompts.numbers import sample_number_prompts

        if p.prompts.type != "numbers":
            raise DataError(f"constrained decoding needs numbers prompts, not {p.prompts.type}")
        grammars = [NumberGrammar.for_prompt(n) for n in sample_number_prompts(p.prompts)]
    usage: dict[str, Any] = {}
    done = [0]

    def advance(n: int) -> None:
        done[0] += n
        ctx.progress(done[0], len(prompts))

    with _opened(ctx, p, p.model, usage, gcfg.batch_size, p.dtype) as backend:
        generate_dataset(
            backend,
            prompts,
            ctx.out / "data.jsonl",
            gcfg,
            system_prompt=p.model.system_prompt,
            source=ctx.spec.name,
            on_progress=advance,
            state_dir=ctx.state,
            grammars=grammars,
        )
    if gcfg.constrained:
        # The filter's report says how its data was written (see run_filter).
        (ctx.out / _DECODING).write_text(json.dumps({"decoding": "constrained"}) + "\n")
    return _with_usage({"rows": len(prompts)}, usage)


def run_filter(ctx: TaskContext, p: FilterParams) -> dict[str, Any]:
    """Keep the replies that pass the filter (format, banned numbers, leakage) and the checks.

    Every row's verdict goes to ``verdicts.jsonl``; judge verdicts are cached in the
    task's state folder, so a killed task asks the judge only about rows it had not judged.
    """
    from sublearn.filters.stage import filter_and_check

    decoding = ctx.inputs["data"] / _DECODING
    references = None
    if p.prompts is not None:  # a check reads each prompt's reference answer
        from sublearn.prompts.kinds import prompt_rows

        references = [row.reference or "" for row in prompt_rows(p.prompts)]
    return filter_and_check(
        ctx.inputs["data"] / "data.jsonl",
        ctx.out,
        p.filter,
        note=json.loads(decoding.read_text()) if decoding.is_file() else {},
        checks=p.checks,
        judges=p.judges,
        trait=p.trait,
        references=references,
        judge_cache=ctx.state,
        device=p.device,
    )


def run_pair(ctx: TaskContext, p: PairParams) -> dict[str, Any]:
    """Draw the rows a seed's treatment and control students train on, paired by prompt."""
    from sublearn.experiments.numbers.pairing import pair_rows

    return pair_rows(
        ctx.inputs["treatment"] / "accepted.jsonl",
        ctx.inputs["control"] / "accepted.jsonl",
        ctx.out,
        p,
    )


def run_defend(ctx: TaskContext, p: DefendParams) -> dict[str, Any]:
    """Clean a seed's treatment and control rows with a defence's data-level steps."""
    from sublearn.defend.config import DefendConfig
    from sublearn.defend.run import run_defences

    models = {role: model_path(ctx, source) for role, source in p.models.items()}
    reports = {}
    for condition in ("treatment", "control"):
        cfg = DefendConfig.model_validate(
            {
                "data": str(ctx.inputs["data"] / f"{condition}.jsonl"),
                "out": str(ctx.out / f"{condition}.jsonl"),
                "base": models["base"],
                "teacher": models[f"{condition}_teacher"],
                "trait": p.trait.model_dump(mode="json"),
                "defences": p.defences,
                "device": p.device,
                "dtype": p.dtype,
                "batch_size": p.batch_size,
                "providers": p.providers,
            }
        )
        report = run_defences(cfg)
        keep = ("rows_in", "rows_out", "rows_masked", "characters_masked", "reply_characters")
        reports[condition] = {k: report[k] for k in keep} | {"defences": report["defences"]}
    return reports


def run_loss(ctx: TaskContext, p: LossParams) -> dict[str, Any]:
    """A student's mean loss per reply token on the held-out control replies."""
    from sublearn.audit.data import load_rows
    from sublearn.audit.scoring import open_scorer, reply_logprob, token_scores
    from sublearn.runs import atomic_write_json

    rows = load_rows(ctx.inputs["data"] / "heldout.jsonl")
    backend = open_scorer(
        model_path(ctx, p.model), device=p.device, dtype=p.dtype, batch_size=p.batch_size
    )
    try:
        scores = token_scores(backend, rows)
    finally:
        backend.close()
    tokens = sum(len(s) for s in scores)
    metrics = {"loss": -float(reply_logprob(scores).sum()) / max(tokens, 1), "tokens": tokens}
    atomic_write_json(ctx.out / "metrics.json", metrics)
    return metrics


def run_train(ctx: TaskContext, p: TrainParams) -> dict[str, Any]:
    """Fine-tune a student on one condition's rows."""
    data = ctx.inputs["data"] / f"{p.condition}.jsonl"
    return _finetune(ctx, p, model_path(ctx, p.base), data, p.finetune, p.teacher)


def train_group_key(params: dict[str, Any]) -> str | None:
    """Students that may train as one batched model: full-weight KL, one recipe.

    Seeds, bases, teachers and data differ within a group; whether the bases and
    teachers share an architecture and tokenizer is checked when the group runs, and
    members that do not are trained alone.
    """
    ft = params["finetune"]
    if ft["objective"] != "kl" or ft["method"] != "full" or ft.get("token_subset") == "data":
        return None  # a data subset differs per student: the batched trainer has one
    return json.dumps({k: v for k, v in ft.items() if k != "seed"}, sort_keys=True)


def run_train_group(tasks: list[tuple[TaskContext, TrainParams]]) -> list[dict[str, Any]]:
    """Train a group of students as one batched model where they allow it.

    Each student ends up exactly as :func:`run_train` would leave it (the batched trainer
    matches ``train_kl`` run alone), in its own ``ctx.out/model``.
    """
    from sublearn.finetune.batched import KLJob, group_compatible, train_kl_batched
    from sublearn.finetune.sft import read_chat_jsonl
    from sublearn.finetune.stage import job_record
    from sublearn.runs import atomic_write_json

    jobs, records = [], []
    for ctx, p in tasks:
        assert p.teacher is not None
        data = ctx.inputs["data"] / f"{p.condition}.jsonl"
        cfg = p.finetune.model_copy(update={"device": p.device})
        job = KLJob(
            base_model=model_path(ctx, p.base),
            records=read_chat_jsonl(data),
            cfg=cfg,
            out=ctx.out / "model",
            teacher_model=model_path(ctx, p.teacher),
            teacher_system_prompt=p.teacher.system_prompt,
        )
        jobs.append(job)
        records.append(
            job_record(job.base_model, data, cfg, job.teacher_model, job.teacher_system_prompt)
        )
    results: list[dict[str, Any]] = [{} for _ in tasks]
    for members in group_compatible(jobs):
        if len(members) == 1:
            results[members[0]] = run_train(*tasks[members[0]])
            continue
        metrics = train_kl_batched(
            [jobs[i] for i in members], progress=tasks[members[0]][0].progress
        )
        for i, m in zip(members, metrics, strict=True):
            # What the one-at-a-time stage records, so either path leaves the same folder.
            results[i] = {**m, "examples": len(jobs[i].records), "job": records[i]}
            atomic_write_json(jobs[i].out / "train_metrics.json", results[i])
            _tensorboard(*tasks[i])
    return results


def run_evaluate(ctx: TaskContext, p: EvaluateParams) -> dict[str, Any]:
    """One evaluation of one model (optionally with teacher examples in its context).

    A preference evaluation writes ``{target: {"rate", "per_question"}}`` to metrics.json;
    every other kind writes its :class:`~sublearn.evaluation.results.EvalResult`.
    """
    from sublearn.evaluation.kinds import (
        EvalRequest,
        evaluate,
        metrics_record,
        result_summary,
    )
    from sublearn.evaluation.preference import icl_context
    from sublearn.runs import atomic_write_json

    context = None
    if p.context is not None:
        c = p.context
        path = ctx.inputs["context"] / f"{c.condition}.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        context = icl_context(records, c.n, c.seed)
    # The evaluation's own batch size is a speed field: the task's runtime holds it.
    ecfg = p.evaluation.model_copy(update={"batch_size": p.batch_size})
    usage: dict[str, Any] = {}
    judge = None
    try:
        with _opened(ctx, p, p.model, usage, ecfg.batch_size, p.dtype) as backend:
            if p.judge is not None:
                from sublearn.judges.config import make_judge

                jcfg = p.judge.model_copy(update={"device": p.device})
                judge = make_judge(jcfg, cache_path=ctx.state / "judge.jsonl")
            evaluated = evaluate(
                EvalRequest(
                    backend,
                    ecfg,
                    targets=p.targets,
                    judge=judge,
                    system_prompt=p.model.system_prompt,
                    context=context,
                )
            )
        # Low-coverage warnings of preference evaluations reach the console once per group
        # at the end of the run (report/experiment.py: coverage_warnings), not once here.
        metrics = metrics_record(evaluated)
        result = result_summary(evaluated)
    finally:
        if judge is not None:
            judge.close()
    atomic_write_json(ctx.out / "metrics.json", metrics)
    return _with_usage(result, usage)
