"""Checks at plan time, before any task runs: a run should fail in its first second, not
after an hour of generation, when a model cannot be loaded or a comparison cannot work."""

from __future__ import annotations

from typing import Any

from sublearn.errors import PlanError
from sublearn.experiments.numbers.config import (
    DatasetTeacher,
    ExperimentConfig,
    PromptedTeacher,
)
from sublearn.experiments.numbers.plan import Plan
from sublearn.finetune.config import FinetuneConfig


def check_plan(plan: Plan) -> list[str]:
    """Raise PlanError for a plan that cannot work; return warnings for one that is weak.

    Checked: every external model reference resolves offline; soft-label (KL) students
    share their teacher's tokenizer; every trait word can be produced by every evaluated
    model's tokenizer; the design has enough seeds for an interval.
    """
    cfg = plan.cfg
    problems: list[str] = [*input_problems(cfg), *_constrained_problems(cfg)]
    warnings: list[str] = []
    external = {k: v for k, v in cfg.models.items() if not v.startswith("toy:")}
    if external:
        from sublearn.backends.refs import ModelRef

        for key, ref in external.items():
            try:
                ModelRef.parse(ref).check()
            except Exception as err:  # every resolution failure becomes one line here
                problems.append(f"models.{key}: {err}")
        remote = {
            key: ModelRef.parse(ref).provider
            for key, ref in external.items()
            if ModelRef.parse(ref).provider in ("openai", "vllm")
        }
        if remote:
            for name, ecfg in cfg.evaluations.items():
                if getattr(ecfg, "answer_prefix", None):
                    problems.append(
                        f"evaluations.{name}: answer_prefix scores whole replies after a "
                        f"lead-in, which API and vLLM models ({', '.join(remote)}) cannot "
                        "(they give first-token log-probabilities): leave it out, or use "
                        "mode: sample"
                    )
                if ecfg.type == "preference" and ecfg.mode == "exact":
                    top = cfg.providers.openai.top_logprobs
                    warnings.append(
                        f"evaluations.{name}: on API and vLLM models ({', '.join(remote)}) exact "
                        f"mode reads the reply's first-token top-{top} log-probabilities: "
                        "exact for one-token answers, a lower bound otherwise"
                    )
        for key, provider in remote.items():
            if provider == "vllm" and cfg.executor.kind != "inline":
                problems.append(
                    f"models.{key}: vllm models run on one server per process; use "
                    "executor: {kind: inline} so that every task shares it"
                )
        problems += _api_training_problems(cfg, remote)
    if problems:
        raise PlanError("the plan cannot run:\n  - " + "\n  - ".join(problems))
    vocab = {key: _vocabulary(cfg, key) for key in cfg.models}
    for spec in cfg.teachers:
        word = spec.trait.word
        if spec.trait.category == "misalignment":
            continue  # a behaviour, not a word a model must be able to say
        for key in {spec.base, *cfg.student_bases()}:
            words = vocab[key]
            if words is not None and word not in words:
                problems.append(
                    f"teacher {spec.label()}: the trait word {word!r} cannot be produced by "
                    f"model {key} ({cfg.models[key]}): its tokenizer cannot spell it"
                )
        for objective in cfg.sections_for(spec.label()):
            ft = cfg.students.objectives.get(objective)
            if ft is None or ft.objective != "kl":
                continue
            for key in cfg.student_bases():
                if not _same_tokenizer(cfg, spec.base, key):
                    problems.append(
                        f"{spec.label()}/{objective}: soft-label KL needs the student {key} to "
                        f"share the teacher base {spec.base}'s tokenizer; it does not (use "
                        "sections to train KL students only on compatible bases)"
                    )
    if len(cfg.students.seeds) < 3:
        warnings.append(
            f"only {len(cfg.students.seeds)} student seed(s): intervals need at least 3, "
            "better 5 or more"
        )
    if problems:
        raise PlanError("the plan cannot run:\n  - " + "\n  - ".join(problems))
    return warnings


def check_inputs(cfg: ExperimentConfig) -> None:
    """Raise PlanError for :func:`input_problems`: cheap, so callers run it before they
    write anything (a run folder)."""
    problems = input_problems(cfg)
    if problems:
        raise PlanError("the plan cannot run:\n  - " + "\n  - ".join(problems))


def input_problems(cfg: ExperimentConfig) -> list[str]:
    """What a run would fail on late that the config alone shows: devices this machine's
    torch does not have, toy bases their world does not build, more rows required than
    there are prompts."""
    from sublearn.errors import DeviceError
    from sublearn.runtime import resolve_device

    problems = []
    for where, device in _devices(cfg.model_dump(mode="json")):
        try:
            resolve_device(device)
        except DeviceError as err:
            problems.append(f"{where}: {err}")
    for key, ref in cfg.models.items():
        if not ref.startswith("toy:"):
            continue
        world, _, index = ref[4:].partition("/")
        if world not in cfg.toy_worlds:
            known = ", ".join(cfg.toy_worlds) or "none"
            problems.append(f"models.{key}: {ref}: no toy world {world!r} (toy_worlds: {known})")
        elif not index.isdigit() or int(index) >= cfg.toy_worlds[world].n_bases:
            n = cfg.toy_worlds[world].n_bases
            problems.append(
                f"models.{key}: {ref}: toy world {world!r} builds {n} bases, "
                f"toy:{world}/0 to toy:{world}/{n - 1}"
            )
    prompts = cfg.data.prompts
    count = getattr(prompts, "n_prompts", None) or getattr(prompts, "n_questions", None)
    if count is not None:
        usable = count - cfg.data.holdout_rows
        if cfg.data.min_rows > usable:
            problems.append(
                f"data.min_rows is {cfg.data.min_rows} but at most {usable:,} prompts can give "
                f"training rows ({count:,} prompts, {cfg.data.holdout_rows:,} held out): lower "
                "min_rows or ask for more prompts"
            )
    return problems


def _devices(data: Any, where: str = "") -> list[tuple[str, str]]:
    """Every ``device`` setting in a config's data, with its dotted location."""
    found: list[tuple[str, str]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            at = f"{where}.{key}" if where else str(key)
            if key == "device" and isinstance(value, str):
                found.append((at, value))
            else:
                found += _devices(value, at)
    elif isinstance(data, list):
        for i, value in enumerate(data):
            found += _devices(value, f"{where}.{i}")
    return found


def _constrained_problems(cfg: ExperimentConfig) -> list[str]:
    """Constrained number decoding needs numbers prompts and teachers that can constrain.

    Hugging Face models (and toy ones) mask the logits; vLLM takes the reply's regular
    expression; a chat API such as OpenAI's samples freely, so it cannot write the data.
    """
    if not cfg.data.generation.constrained:
        return []
    if cfg.data.prompts.type != "numbers":
        return [
            "data.generation.constrained: constrained decoding keeps replies in the numbers "
            f"format; data.prompts.type is {cfg.data.prompts.type}"
        ]
    from sublearn.backends.refs import ModelRef

    problems = []
    for spec in cfg.teachers:
        ref = cfg.models[spec.base]
        if isinstance(spec.kind, DatasetTeacher) or ref.startswith("toy:"):
            continue
        provider = ModelRef.parse(ref).provider
        if provider not in ("hf", "vllm"):
            problems.append(
                f"teacher {spec.label()}: data.generation.constrained needs a model whose "
                f"decoding sublearn can constrain (Hugging Face or vLLM); {spec.base} runs on "
                f"{provider}, whose API cannot: turn constrained off, or use a local model"
            )
    return problems


def _api_training_problems(cfg: ExperimentConfig, remote: dict[str, str]) -> list[str]:
    """What a fine-tuning API cannot do: soft labels, partial epochs, step limits.

    Students and teachers fine-tuned on an ``openai:`` base go through the API; a KL
    student also needs its teacher's logits on this machine, which an API or vLLM
    teacher does not give.
    """
    problems = []

    def api_problem(where: str, ft: FinetuneConfig, key: str) -> None:
        if ft.objective != "sft" or ft.epochs % 1 or ft.max_steps is not None:
            problems.append(
                f"{where}: a fine-tuning API trains {key} on sampled replies (objective: sft) "
                "for whole epochs (max_steps: null)"
            )
        if ft.optimizer != "adamw":
            problems.append(
                f"{where}: a fine-tuning API picks its own optimizer; optimizer: "
                f"{ft.optimizer} cannot train {key}"
            )

    for name, defence in cfg.defences.items():
        masks = [d.type for d in defence.data if d.type.startswith("mask_")]
        if masks and any(remote.get(k) == "openai" for k in cfg.student_bases()):
            problems.append(
                f"defences.{name}: {', '.join(masks)} writes per-token loss masks, which a "
                "fine-tuning API cannot take (it trains on whole replies)"
            )
    for spec in cfg.teachers:
        kind = spec.kind
        if remote.get(spec.base) == "openai" and not isinstance(kind, PromptedTeacher):
            api_problem(f"teachers {spec.label()} kind.finetune", kind.finetune, spec.base)
        for objective in cfg.sections_for(spec.label()):
            ft = cfg.students.objectives.get(objective)
            if ft is None:
                continue
            if ft.objective == "kl" and spec.base in remote:
                problems.append(
                    f"students.objectives.{objective}: soft-label KL needs the teacher's logits "
                    f"here; teacher {spec.label()} runs on {remote[spec.base]}"
                )
                continue
            for key in cfg.student_bases():
                if remote.get(key) == "openai":
                    api_problem(f"students.objectives.{objective}", ft, key)
    return list(dict.fromkeys(problems))


def _vocabulary(cfg: ExperimentConfig, key: str) -> set[str] | None:
    """Trait words a base can produce; None where that cannot be known before it is built.

    A toy base's words come from its world's config; a local Hugging Face model's from its
    tokenizer (no weights are read). Remote providers spell anything.
    """
    ref = cfg.models[key]
    words = {t.trait.word for t in cfg.teachers}
    if ref.startswith("toy:"):
        world = cfg.toy_worlds[ref[4:].split("/")[0]]
        return {*world.corpus.animals, *world.corpus.trees}
    from sublearn.backends.refs import ModelRef

    parsed = ModelRef.parse(ref)
    if parsed.provider != "hf":
        return None
    from transformers import AutoTokenizer

    from sublearn.evaluation.targets import unproducible_targets

    tokenizer = AutoTokenizer.from_pretrained(parsed.name)
    return words - set(unproducible_targets(tokenizer, words))


def _same_tokenizer(cfg: ExperimentConfig, a: str, b: str) -> bool:
    ra, rb = cfg.models[a], cfg.models[b]
    if ra.startswith("toy:") and rb.startswith("toy:"):
        wa = cfg.toy_worlds[ra[4:].split("/")[0]]
        wb = cfg.toy_worlds[rb[4:].split("/")[0]]
        # A toy world's vocabulary comes from its corpus, which its seed and corpus settings fix.
        return (wa.seed, wa.corpus, wa.model.max_positions) == (
            wb.seed,
            wb.corpus,
            wb.model.max_positions,
        )
    if ra.startswith("toy:") or rb.startswith("toy:"):
        return False
    from transformers import AutoTokenizer

    from sublearn.backends.refs import ModelRef

    a_ref, b_ref = ModelRef.parse(ra), ModelRef.parse(rb)
    if "openai" in (a_ref.provider, b_ref.provider):
        return False  # an API model's tokenizer is not on this machine
    return (
        AutoTokenizer.from_pretrained(a_ref.name).get_vocab()
        == AutoTokenizer.from_pretrained(b_ref.name).get_vocab()
    )
