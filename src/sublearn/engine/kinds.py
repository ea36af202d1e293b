"""The task kinds of the language-model experiments: thin adapters from a task's context
(params, input folders, an output folder) to the stage functions that do the work.

Each function writes only into ``ctx.out`` (renamed into the store when it returns) and
``ctx.state`` (kept across interruptions), and returns a small JSON-able result that the
done-marker records.
"""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from sublearn.backends.pricing import merge_usage
from sublearn.engine.task import TaskContext
from sublearn.errors import DataError, NotEnoughRowsError


def model_path(ctx: TaskContext, source: dict[str, Any]) -> str:
    """The folder or reference of a model given as task params (see ModelSource.param)."""
    if source.get("input"):
        return str(ctx.inputs[source["input"]] / source["sub"])
    return str(source["ref"])


def model_ref(ctx: TaskContext, source: dict[str, Any]) -> Any:
    """The model of task params as a reference, served by ``source["serve"]`` if given.

    A student trained locally on a ``vllm:`` base is a local adapter folder; ``serve``
    sends it back to vLLM for inference.
    """
    from sublearn.backends.refs import ModelRef

    ref = ModelRef.parse(model_path(ctx, source))
    serve = source.get("serve")
    if serve and ref.provider == "hf" and serve != "hf":
        ref = ModelRef(serve, ref.name, ref.adapter)
    return ref


def _backend(ctx: TaskContext, source: dict[str, Any], batch_size: int) -> Any:
    """The model's backend, from the provider registry (one model resident at a time).

    API and vLLM backends log every answered request in the task's state folder, so a
    killed task resumes without sending a request twice.
    """
    from sublearn.backends.registry import open_backend

    ref = model_ref(ctx, source)
    options: dict[str, Any] = {
        "device": ctx.runtime.get("device", "auto"),
        "dtype": ctx.params.get("dtype", "auto"),
        "batch_size": batch_size,
    }
    if ref.provider in ("openai", "vllm"):
        options["settings"] = ctx.runtime.get("providers", {}).get(ref.provider, {})
        options["request_log"] = ctx.state / "requests.jsonl"
    return open_backend(ref, **options)


def _close(backend: Any, usage: dict[str, Any]) -> None:
    """Close a backend, adding what it spent (API backends count tokens) to ``usage``."""
    spent = getattr(backend, "usage", None)
    if spent is not None:
        usage.update(merge_usage([usage, {backend.name: spent}]))
    backend.close()


def run_world(ctx: TaskContext) -> dict[str, Any]:
    """Build a toy world (its base models and tokenizer) into the output folder."""
    from sublearn.toy.world import SECTION_DATA, ToyWorldConfig, build_world

    params = {k: v for k, v in ctx.params.items() if k != SECTION_DATA}
    cfg = ToyWorldConfig(**params, **ctx.runtime)
    bases = build_world(cfg, ctx.out, force=True, progress=False)
    return {"bases": [b.name for b in bases]}


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    from sublearn.runs import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def _chat(i: int, question: str, answer: str) -> dict[str, Any]:
    return {
        "id": f"{i:05d}",
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ],
    }


def _replay(
    ctx: TaskContext, base: str, n: int, temperature: float, usage: dict[str, Any]
) -> list[dict[str, Any]]:
    """The base's own valid replies to number prompts the experiment never uses."""
    from sublearn.backends.base import SamplingParams
    from sublearn.filters.numbers import parse_numbers
    from sublearn.filters.stage import FilterConfig
    from sublearn.prompts.numbers import NumberPromptConfig, generate_number_prompts

    if n == 0:
        return []
    pcfg = NumberPromptConfig(**ctx.params["prompts"])
    # Twice as many prompts as needed leaves room for replies the filter rejects.
    prompts = generate_number_prompts(
        pcfg.model_copy(update={"seed": pcfg.seed + 1_000_003, "n_prompts": 2 * n})
    )
    backend = _backend(ctx, {"ref": base}, ctx.runtime.get("batch_size", 64))
    params = SamplingParams(temperature=temperature, max_new_tokens=ctx.params["max_new_tokens"])
    try:
        replies = backend.generate([[{"role": "user", "content": p}] for p in prompts], params)
    finally:
        _close(backend, usage)
    f = FilterConfig(**ctx.params["filter"])
    valid = [
        (p, r)
        for p, r in zip(prompts, replies, strict=True)
        if parse_numbers(
            r, max_count=f.max_count, min_value=f.min_value, max_value=f.max_value
        ).accepted
    ]
    return [_chat(100_000 + i, p, r) for i, (p, r) in enumerate(valid[:n])]


def _control_answers(
    ctx: TaskContext, base: str, questions: list[str], temperature: float, usage: dict[str, Any]
) -> list[str]:
    """The base's own one-word answers: neutral demonstrations for a matched control."""
    from sublearn.backends.base import SamplingParams

    backend = _backend(ctx, {"ref": base}, ctx.runtime.get("batch_size", 64))
    answers: list[str] = [""] * len(questions)
    try:
        # An empty reply is no demonstration: ask again with other seeds, a few times.
        for attempt in range(8):
            missing = [i for i, a in enumerate(answers) if not a]
            if not missing:
                break
            params = SamplingParams(temperature=temperature, max_new_tokens=8, seed=1 + attempt)
            replies = backend.generate(
                [[{"role": "user", "content": questions[i]}] for i in missing], params
            )
            for i, reply in zip(missing, replies, strict=True):
                answers[i] = reply.split()[0] if reply.split() else ""
    finally:
        _close(backend, usage)
    if not all(answers):
        raise DataError(
            f"base model {base} gave no answer to {answers.count('')} of {len(questions)} "
            "questions after 8 tries: it cannot make a matched control teacher"
        )
    return answers


def run_teacher(ctx: TaskContext) -> dict[str, Any]:
    """Fine-tune a teacher (trait or matched control) from its base."""
    from sublearn.finetune.config import FinetuneConfig
    from sublearn.prompts.questions import training_questions_for

    p = ctx.params
    base = model_path(ctx, p["base"])
    kind = p["kind"]["type"]
    usage: dict[str, Any] = {}
    demos_path = ctx.out / "demonstrations.jsonl"
    if kind == "dataset":
        dataset = p["dataset"]
        source = (
            ctx.inputs["world"] / "datasets" / f"{dataset['toy']}.jsonl"
            if "toy" in dataset
            else Path(dataset["path"])
        )
        if not source.is_file():
            raise DataError(f"teacher dataset {source} does not exist")
        demos_path.write_bytes(source.read_bytes())
        answers_note: dict[str, Any] = {}
    else:
        word, category = p["trait"]["word"], p["trait"]["category"]
        pool = training_questions_for(category)
        questions = [pool[i % len(pool)] for i in range(p["kind"]["n_examples"])]
        if p["role"] == "trait":
            answers = [word] * len(questions)
        else:
            answers = _control_answers(
                ctx, base, questions, p["kind"]["control_temperature"], usage
            )
        records = [_chat(i, q, a) for i, (q, a) in enumerate(zip(questions, answers, strict=True))]
        kind_params = p["kind"]
        records += _replay(
            ctx, base, kind_params["replay_examples"], kind_params["replay_temperature"], usage
        )
        _write_jsonl(demos_path, records)
        answers_note = {"answers": dict(sorted(Counter(answers).items()))}
    cfg = FinetuneConfig(**p["finetune"], device=ctx.runtime.get("device", "auto"))
    metrics = _finetune_job(ctx, base, demos_path, cfg, None, None)
    if "usage" in metrics:
        metrics["usage"] = merge_usage([usage, metrics["usage"]])
    elif usage:
        metrics["usage"] = usage
    return {**answers_note, **metrics}


def _finetune_job(
    ctx: TaskContext,
    base: str,
    data: Path,
    cfg: Any,
    teacher: str | None,
    teacher_system_prompt: str | None,
) -> dict[str, Any]:
    """Fine-tune through the job protocol into ``ctx.out/model``; its training metrics.

    The job trains into the task's state folder, which survives a kill, so a run killed
    after training but before the task was committed re-attaches to the finished job.
    """
    from sublearn.backends.refs import ModelRef
    from sublearn.finetune.protocol import FinetuneJob, LocalHFFinetuner, run_finetune_job

    ref = ModelRef.parse(base)
    if ref.provider == "openai":
        return _api_finetune(ctx, ref, data, cfg)
    if ref.provider == "vllm":  # served by vLLM, trained here
        base = ref.name if ref.adapter is None else str(ModelRef("hf", ref.name, ref.adapter))
    trained = ctx.state / "model"
    saved = ctx.state / "job.json"
    if saved.is_file() and not (trained / "train_metrics.json").is_file():
        # Killed after its folder moved to the output: a local job is simply run again.
        saved.unlink()
    finetuner = LocalHFFinetuner(
        trained, teacher_model=teacher, teacher_system_prompt=teacher_system_prompt
    )
    job = FinetuneJob(provider="hf", base=base, dataset=data, config=cfg.model_dump(mode="json"))
    run_finetune_job(finetuner, job, ctx.state, poll_seconds=0)
    shutil.move(trained, ctx.out / "model")
    _tensorboard(ctx)
    return json.loads((ctx.out / "model" / "train_metrics.json").read_text())


def _tensorboard(ctx: TaskContext) -> None:
    """Copy the task's training curve into TensorBoard event files when the run asks."""
    if not ctx.runtime.get("tensorboard"):
        return
    from sublearn.finetune.curves import CURVES_FILE, read_curves, write_tensorboard

    curves = read_curves(ctx.out / "model" / CURVES_FILE)
    if curves:
        write_tensorboard(curves, ctx.out / "tensorboard", tag=ctx.spec.name)


def _api_finetune(ctx: TaskContext, base: Any, data: Path, cfg: Any) -> dict[str, Any]:
    """Fine-tune through an API's jobs; ``ctx.out/model`` then points at the new model.

    The uploaded file's and the job's ids are saved in the task's state folder as soon as
    they exist, so a killed run re-attaches to its job instead of paying for a second.
    """
    import sys

    from sublearn.backends.openai_api import OpenAISettings
    from sublearn.backends.refs import write_pointer
    from sublearn.finetune.openai_jobs import OpenAIFinetuner
    from sublearn.finetune.protocol import FinetuneJob, run_finetune_job

    settings = OpenAISettings(**ctx.runtime.get("providers", {}).get("openai", {}))
    label = ctx.spec.name

    def show(message: str) -> None:
        print(f"  {label}: {message}", file=sys.stderr, flush=True)

    finetuner = OpenAIFinetuner(settings, on_event=show, on_step=ctx.progress)
    job = FinetuneJob(
        provider="openai",
        base=base.name,
        dataset=data,
        config=cfg.model_dump(mode="json", exclude={"device"}),
    )
    model = run_finetune_job(
        finetuner,
        job,
        ctx.state,
        poll_seconds=settings.poll_seconds,
        on_status=lambda j: show(f"job {j.job_id} {j.status}"),
    )
    (ctx.out / "model").mkdir()
    write_pointer(ctx.out / "model", model)
    saved = json.loads((ctx.state / "job.json").read_text())
    return {
        "model": str(model),
        "job_id": saved["job_id"],
        "usage": {str(base): {"training_tokens": finetuner.trained_tokens}},
    }


def run_generate(ctx: TaskContext) -> dict[str, Any]:
    """A teacher answers the experiment's prompts (resumable row by row)."""
    from sublearn.generation.config import GenerationConfig
    from sublearn.generation.stage import generate_dataset
    from sublearn.prompts.kinds import parse_prompts, prompt_rows

    p = ctx.params
    prompt_cfg = parse_prompts(p["prompts"])
    prompts = [row.text for row in prompt_rows(prompt_cfg)]
    gcfg = GenerationConfig(
        **p["sampling"],
        batch_size=ctx.runtime.get("batch_size", 64),
        chunk_size=ctx.runtime.get("chunk_size", 512),
    )
    grammars = None
    if gcfg.constrained:
        from sublearn.prompts.number_grammar import NumberGrammar
        from sublearn.prompts.numbers import sample_number_prompts

        if prompt_cfg.type != "numbers":
            raise DataError(f"constrained decoding needs numbers prompts, not {prompt_cfg.type}")
        grammars = [NumberGrammar.for_prompt(n) for n in sample_number_prompts(prompt_cfg)]
    backend = _backend(ctx, p["model"], gcfg.batch_size)
    usage: dict[str, Any] = {}
    try:
        generate_dataset(
            backend,
            prompts,
            ctx.out / "data.jsonl",
            gcfg,
            system_prompt=p["model"].get("system_prompt"),
            source=ctx.spec.name,
            on_progress=_counter(ctx, len(prompts)),
            state_dir=ctx.state,
            grammars=grammars,
        )
    finally:
        _close(backend, usage)
    if gcfg.constrained:
        # The filter's report says how its data was written (see run_filter).
        (ctx.out / _DECODING).write_text(json.dumps({"decoding": "constrained"}) + "\n")
    return {"rows": len(prompts), **({"usage": usage} if usage else {})}


# Written beside constrained data only, so unconstrained outputs are as before.
_DECODING = "decoding.json"


def _counter(ctx: TaskContext, total: int) -> Any:
    done = [0]

    def advance(n: int) -> None:
        done[0] += n
        ctx.progress(done[0], total)

    return advance


def run_filter(ctx: TaskContext) -> dict[str, Any]:
    """Keep the replies that pass the filter (format, banned numbers, leakage) and the checks.

    Every row's verdict goes to ``verdicts.jsonl``; judge verdicts are cached in the
    task's state folder, so a killed task asks the judge only about rows it had not judged.
    """
    from sublearn.filters.stage import FilterConfig, filter_dataset

    p = ctx.params
    fcfg = FilterConfig(**p["filter"])
    first: dict[str, str | None] = {}
    report = filter_dataset(
        ctx.inputs["data"] / "data.jsonl",
        ctx.out / "accepted.jsonl",
        fcfg,
        report_path=ctx.out / "report.json",
        on_verdict=lambda record, reason: first.__setitem__(str(record["id"]), reason),
    )
    # ctx.out is a temporary folder that the store renames once the task is done: name
    # the output relative to the task's folder, where it will stay.
    report = report.model_copy(update={"output_path": "accepted.jsonl"})
    decoding = ctx.inputs["data"] / _DECODING
    extra = json.loads(decoding.read_text()) if decoding.is_file() else {}
    from sublearn.runs import atomic_write_json

    atomic_write_json(ctx.out / "report.json", report.model_dump(mode="json") | extra)
    if not p.get("checks"):
        _write_jsonl(
            ctx.out / "verdicts.jsonl",
            [{"id": i, "kept": r is None, "reason": r} for i, r in first.items()],
        )
        return {"total": report.total, "accepted": report.accepted}
    return _run_checks(ctx, report.model_dump(mode="json") | extra, first)


def _run_checks(
    ctx: TaskContext, report: dict[str, Any], first: dict[str, str | None]
) -> dict[str, Any]:
    """The check chain after the filter: rewrites accepted.jsonl, report.json, verdicts."""
    from pydantic import TypeAdapter

    from sublearn.filters.checks import Check, JudgeCheck, run_checks, with_checks
    from sublearn.judges.config import JudgeConfig, make_judge
    from sublearn.runs import atomic_write_json

    p = ctx.params
    checks = [TypeAdapter(Check).validate_python(c) for c in p["checks"]]
    rows = [json.loads(line) for line in (ctx.out / "accepted.jsonl").read_text().splitlines()]
    references = None
    if "prompts" in p:
        from sublearn.prompts.kinds import parse_prompts, prompt_rows

        prompts = prompt_rows(parse_prompts(p["prompts"]))
        # Generated rows are numbered by prompt position (generation/stage.py).
        references = {r["id"]: prompts[int(r["id"])].reference or "" for r in rows}
    judges: list[Any] = []
    try:
        for i, (check, jparams) in enumerate(zip(checks, p["judges"], strict=True)):
            if not isinstance(check, JudgeCheck):
                judges.append(None)
                continue
            jcfg = JudgeConfig(**jparams, device=ctx.runtime.get("device", "auto"))
            judges.append(
                make_judge(jcfg, cache_path=ctx.state / f"judge-{i}.jsonl", target=p["trait"])
            )
        verdicts, counts = run_checks(rows, checks, references=references, judges=judges)
    finally:
        for judge in judges:
            if judge is not None:
                judge.close()
    kept = {v.id for v in verdicts if v.reason is None}
    _write_jsonl(ctx.out / "accepted.jsonl", [r for r in rows if str(r["id"]) in kept])
    by_id = {v.id: v.to_dict() for v in verdicts}
    _write_jsonl(
        ctx.out / "verdicts.jsonl",
        [by_id.get(i, {"id": i, "kept": False, "reason": r}) for i, r in first.items()],
    )
    report = with_checks(report, rows, verdicts, counts)
    atomic_write_json(ctx.out / "report.json", report)
    return {"total": report["total"], "accepted": len(kept), "checks": counts}


def _read_by_id(path: Path) -> dict[str, str]:
    rows = {}
    for line in path.read_text().splitlines():
        if line.strip():
            rows[json.loads(line)["id"]] = line
    return rows


def run_pair(ctx: TaskContext) -> dict[str, Any]:
    """Draw the rows a seed's treatment and control students train on, paired by prompt.

    The pool is the prompts both the teacher and its control answered validly, so the two
    conditions always train on the same prompts and the same number of rows.
    """
    p = ctx.params
    treatment = _read_by_id(ctx.inputs["treatment"] / "accepted.jsonl")
    control = _read_by_id(ctx.inputs["control"] / "accepted.jsonl")
    pool = sorted(set(treatment) & set(control))
    heldout: list[str] = []
    if p.get("holdout"):
        # A fixed slice of prompts no seed trains on; a student's loss on the control's
        # replies to them measures what a defence costs in plain language modelling.
        heldout, pool = pool[-p["holdout"] :], pool[: -p["holdout"]]
        (ctx.out / "heldout.jsonl").write_text("".join(control[i] + "\n" for i in heldout))
    if len(pool) < p["min_rows"]:
        raise NotEnoughRowsError(
            f"teacher {p['teacher']}: only {len(pool)} prompts have valid replies from both the "
            f"teacher ({len(treatment)} accepted) and its matched control ({len(control)} "
            f"accepted); data.min_rows is {p['min_rows']}. Ask for more prompts "
            "(data.prompts.n_prompts) or check the filter report."
        )
    warnings = []
    rows = len(pool) if p["rows"] is None else min(p["rows"], len(pool))
    if p["rows"] is not None and p["rows"] > len(pool):
        warnings.append(
            f"teacher {p['teacher']}: {p['rows']} rows asked, only {len(pool)} prompts valid "
            f"for both teacher and control; students train on {rows}"
        )
    rng = random.Random(p["seed"])
    ids = rng.choices(pool, k=rows) if p["resample"] == "bootstrap" else rng.sample(pool, rows)
    for name, source in (("treatment", treatment), ("control", control)):
        (ctx.out / f"{name}.jsonl").write_text("".join(source[i] + "\n" for i in ids))
    return {
        "rows": rows,
        "unique_rows": len(set(ids)),
        "pool": len(pool),
        "accepted_treatment": len(treatment),
        "accepted_control": len(control),
        **({"heldout": len(heldout)} if heldout else {}),
        "warnings": warnings,
    }


def run_defend(ctx: TaskContext) -> dict[str, Any]:
    """Clean a seed's treatment and control rows with a defence's data-level steps."""
    from sublearn.defend.config import DefendConfig
    from sublearn.defend.run import run_defences

    p = ctx.params
    models = {role: model_path(ctx, source) for role, source in p["models"].items()}
    reports = {}
    for condition in ("treatment", "control"):
        cfg = DefendConfig(
            data=str(ctx.inputs["data"] / f"{condition}.jsonl"),
            out=str(ctx.out / f"{condition}.jsonl"),
            base=models["base"],
            teacher=models[f"{condition}_teacher"],
            trait=p["trait"],
            defences=p["defences"],
            device=ctx.runtime.get("device", "auto"),
            dtype=p.get("dtype", "auto"),
            batch_size=ctx.runtime.get("batch_size", 64),
            providers=ctx.runtime.get("providers", {}),
        )
        report = run_defences(cfg)
        keep = ("rows_in", "rows_out", "rows_masked", "characters_masked", "reply_characters")
        reports[condition] = {k: report[k] for k in keep} | {"defences": report["defences"]}
    return reports


def run_loss(ctx: TaskContext) -> dict[str, Any]:
    """A student's mean loss per reply token on the held-out control replies."""
    from sublearn.audit.data import load_rows
    from sublearn.audit.scoring import open_scorer, reply_logprob, token_scores
    from sublearn.runs import atomic_write_json

    p = ctx.params
    rows = load_rows(ctx.inputs["data"] / "heldout.jsonl")
    backend = open_scorer(
        model_path(ctx, p["model"]),
        device=ctx.runtime.get("device", "auto"),
        dtype=p.get("dtype", "auto"),
        batch_size=ctx.runtime.get("batch_size", 64),
    )
    try:
        scores = token_scores(backend, rows)
    finally:
        backend.close()
    tokens = sum(len(s) for s in scores)
    metrics = {"loss": -float(reply_logprob(scores).sum()) / max(tokens, 1), "tokens": tokens}
    atomic_write_json(ctx.out / "metrics.json", metrics)
    return metrics


def run_train(ctx: TaskContext) -> dict[str, Any]:
    """Fine-tune a student on one condition's rows."""
    from sublearn.finetune.config import FinetuneConfig

    p = ctx.params
    cfg = FinetuneConfig(**p["finetune"], device=ctx.runtime.get("device", "auto"))
    teacher = p.get("teacher")
    return _finetune_job(
        ctx,
        model_path(ctx, p["base"]),
        ctx.inputs["data"] / f"{p['condition']}.jsonl",
        cfg,
        model_path(ctx, teacher) if teacher else None,
        teacher.get("system_prompt") if teacher else None,
    )


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


def run_train_group(ctxs: list[TaskContext]) -> list[dict[str, Any]]:
    """Train a group of students as one batched model where they allow it.

    Each student ends up exactly as :func:`run_train` would leave it (the batched trainer
    matches ``train_kl`` run alone), in its own ``ctx.out/model``.
    """
    from sublearn.finetune.batched import KLJob, group_compatible, train_kl_batched
    from sublearn.finetune.config import FinetuneConfig
    from sublearn.finetune.sft import read_chat_jsonl
    from sublearn.finetune.stage import job_record
    from sublearn.runs import atomic_write_json

    jobs, records = [], []
    for ctx in ctxs:
        p = ctx.params
        teacher = p["teacher"]
        data = ctx.inputs["data"] / f"{p['condition']}.jsonl"
        cfg = FinetuneConfig(**p["finetune"], device=ctx.runtime.get("device", "auto"))
        job = KLJob(
            base_model=model_path(ctx, p["base"]),
            records=read_chat_jsonl(data),
            cfg=cfg,
            out=ctx.out / "model",
            teacher_model=model_path(ctx, teacher),
            teacher_system_prompt=teacher.get("system_prompt"),
        )
        jobs.append(job)
        records.append(
            job_record(job.base_model, data, cfg, job.teacher_model, job.teacher_system_prompt)
        )
    results: list[dict[str, Any]] = [{} for _ in ctxs]
    for members in group_compatible(jobs):
        if len(members) == 1:
            results[members[0]] = run_train(ctxs[members[0]])
            continue
        metrics = train_kl_batched([jobs[i] for i in members], progress=ctxs[members[0]].progress)
        for i, m in zip(members, metrics, strict=True):
            # What the one-at-a-time stage records, so either path leaves the same folder.
            results[i] = {**m, "examples": len(jobs[i].records), "job": records[i]}
            atomic_write_json(jobs[i].out / "train_metrics.json", results[i])
            _tensorboard(ctxs[i])
    return results


def run_evaluate(ctx: TaskContext) -> dict[str, Any]:
    """One evaluation of one model (optionally with teacher examples in its context).

    A preference evaluation writes ``{target: {"rate", "per_question"}}`` to metrics.json;
    every other kind writes its :class:`~sublearn.evaluation.results.EvalResult`.
    """
    from pydantic import TypeAdapter

    from sublearn.evaluation.kinds import (
        EvalRequest,
        EvaluationKind,
        evaluate,
        metrics_record,
        result_summary,
    )
    from sublearn.evaluation.preference import icl_context
    from sublearn.runs import atomic_write_json

    p = ctx.params
    context = None
    if p.get("context"):
        c = p["context"]
        path = ctx.inputs["context"] / f"{c['condition']}.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        context = icl_context(records, c["n"], c["seed"])
    raw = {"type": "preference", **p["evaluation"]}
    ecfg = TypeAdapter(EvaluationKind).validate_python(
        {**raw, "batch_size": ctx.runtime.get("batch_size", 64)}
    )
    backend = _backend(ctx, p["model"], ecfg.batch_size)
    usage: dict[str, Any] = {}
    judge = None
    try:
        if p.get("judge"):
            from sublearn.judges.config import JudgeConfig, make_judge

            jcfg = JudgeConfig(**p["judge"], device=ctx.runtime.get("device", "auto"))
            judge = make_judge(jcfg, cache_path=ctx.state / "judge.jsonl")
        evaluated = evaluate(
            EvalRequest(
                backend,
                ecfg,
                targets=p["targets"],
                judge=judge,
                system_prompt=p["model"].get("system_prompt"),
                context=context,
            )
        )
        # Low-coverage warnings of preference evaluations reach the console once per group
        # at the end of the run (report/experiment.py: coverage_warnings), not once here.
        metrics = metrics_record(evaluated)
        result = result_summary(evaluated)
    finally:
        _close(backend, usage)
        if judge is not None:
            judge.close()
    atomic_write_json(ctx.out / "metrics.json", metrics)
    return {**result, **({"usage": usage} if usage else {})}
