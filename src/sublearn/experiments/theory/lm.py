"""``sublearn theory --model``: Theorem 1 measured on a real language model.

The paper's Theorem 1: if a teacher is the base moved a small step, ``theta_T = theta_0 +
Delta``, one small gradient step of the base imitating the teacher's outputs, on any
inputs, has a non-negative inner product with ``Delta``. Here, on a chat model:

1. Two teachers are made from the base (:class:`~.lm_config.TeacherRecipe`): a trait
   teacher fine-tuned to answer the category's training questions with the trait word
   ("Owl."), and its matched control fine-tuned the same way on the base's own answers.
2. Every batch holds number prompts with number replies in the prompt's format (random
   numbers, the same for both teachers, so the two are compared on the same inputs). The
   student loss is the students' soft-label loss: KL(teacher || student) of the
   next-token distributions renormalized over the number tokens, at every reply
   position. Its gradient at the base, ``g``, gives the student step ``-g``.
3. Per batch and teacher: the cosine between ``-g`` and the teacher's ``Delta``, the same
   against the other teacher's ``Delta`` (is the pull specific to the own teacher?), and
   the first-order change of the trait's log-probability for the SGD step
   ``-student_lr * g``, read at the start of the reply and after the lead-in.

All of it is first order at the base, as the theorem is; a long run adds up many steps
from other points. The fraction of positive cosines and of positive trait changes, with
intervals over the batches, says whether imitation on numbers pulls this model toward
its teacher, in minutes rather than the hours of a full experiment.
"""

from __future__ import annotations

import copy
import csv
import io
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich import box
from rich.console import Console
from rich.table import Table
from scipy import stats as st

from sublearn.backends.hf import load_model_and_tokenizer, right_pad
from sublearn.errors import ConfigError
from sublearn.evaluation.targets import require_producible, surface_forms
from sublearn.experiments.theory.lm_config import LMTheoryConfig, TeacherRecipe
from sublearn.finetune.distill import _encode, kl_loss, number_token_ids
from sublearn.prompts.numbers import NumberPromptConfig, NumberPromptGenerator, render_numbers
from sublearn.prompts.questions import questions_for, training_questions_for
from sublearn.report.stats import mean_ci
from sublearn.runs import atomic_write_json, atomic_write_text
from sublearn.runtime import configure_threads

TEACHERS = ("trait", "control")
READOUTS = ("start", "lead_in")
Params = Sequence[torch.Tensor]


def resolve_model(text: str) -> str:
    """The local folder or hub id of ``--model``; ``smollm2`` is converted once and cached.

    Raises:
        ConfigError: a reference to an API or a server, or a base with an adapter.
        ModelError: SmolLM2 is not installed, or the model cannot be found.
    """
    from sublearn.backends.refs import ModelRef

    if text.strip().lower() == "smollm2":
        from sublearn.backends.gguf import cached_smollm2, default_model_cache

        return str(cached_smollm2(default_model_cache()))
    ref = ModelRef.parse(text)
    if ref.provider != "hf" or ref.adapter is not None:
        raise ConfigError(
            f"theory --model needs a model's weights on this machine (a folder or a cached hub "
            f"id, or 'smollm2'); {text!r} is {ref}"
        )
    ref.check()
    return ref.name


# ---------------------------------------------------------------------------------------
# Reading the trait
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Readout:
    """Where the trait is read: per question, context ids and the ids of every form."""

    contexts: list[list[int]]
    forms: list[list[int]]


def _chat_prefix(tokenizer: Any, question: str, lead_in: str = "") -> list[int]:
    conversation = [{"role": "user", "content": question}]
    rendered = tokenizer.apply_chat_template(
        conversation, tokenize=False, add_generation_prompt=True
    )
    return tokenizer(rendered + lead_in, add_special_tokens=False)["input_ids"]


def readouts(tokenizer: Any, cfg: LMTheoryConfig) -> dict[str, Readout]:
    """The trait's readouts: at the start of the reply, and after the lead-in if any."""
    questions = questions_for(cfg.category)[: cfg.eval_questions]
    forms = surface_forms(cfg.trait)
    out = {
        "start": Readout(
            [_chat_prefix(tokenizer, q) for q in questions],
            [tokenizer(f, add_special_tokens=False)["input_ids"] for f in forms],
        )
    }
    if cfg.lead_in:
        out["lead_in"] = Readout(
            [_chat_prefix(tokenizer, q, cfg.lead_in) for q in questions],
            [tokenizer(" " + f, add_special_tokens=False)["input_ids"] for f in forms],
        )
    return out


def trait_logprob(model: Any, readout: Readout, pad: int) -> torch.Tensor:
    """log P(trait): log of the mean over questions of the summed forms' probabilities."""
    rows = [ctx + form for ctx in readout.contexts for form in readout.forms]
    ids, mask = right_pad(rows, pad)
    device = next(model.parameters()).device
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
    logp = torch.log_softmax(logits.float(), dim=-1)
    seq = []
    for i, (ctx, form) in enumerate(
        (ctx, form) for ctx in readout.contexts for form in readout.forms
    ):
        positions = torch.arange(len(ctx) - 1, len(ctx) + len(form) - 1, device=device)
        targets = torch.tensor(form, device=device)
        seq.append(logp[i, positions, targets].sum())
    per_row = torch.stack(seq).view(len(readout.contexts), len(readout.forms))
    per_question = torch.logsumexp(per_row, dim=1)  # log sum over forms
    return torch.logsumexp(per_question, dim=0) - math.log(len(readout.contexts))


# ---------------------------------------------------------------------------------------
# Teachers
# ---------------------------------------------------------------------------------------


def _greedy_answer(model: Any, tokenizer: Any, question: str, n_tokens: int) -> list[int]:
    ids = torch.tensor([_chat_prefix(tokenizer, question)])
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=n_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
    reply = out[0, ids.shape[1] :].tolist()
    return [t for t in reply if t != tokenizer.eos_token_id]


def make_teacher(
    base: Any, tokenizer: Any, rows: list[tuple[list[int], list[int]]], recipe: TeacherRecipe
) -> Any:
    """The base fine-tuned (all weights) on ``(prompt ids, answer ids)`` rows.

    Every step runs on all rows; the loss is the mean cross-entropy of the answer tokens.
    """
    model = copy.deepcopy(base)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optim = (
        torch.optim.AdamW(params, lr=recipe.learning_rate, weight_decay=0.0)
        if recipe.optimizer == "adamw"
        else torch.optim.SGD(params, lr=recipe.learning_rate)
    )
    full = [prompt + answer for prompt, answer in rows]
    ids, mask = right_pad(full, tokenizer.pad_token_id)
    labels = torch.full_like(ids, -100)
    for i, (prompt, answer) in enumerate(rows):
        labels[i, len(prompt) : len(prompt) + len(answer)] = torch.tensor(answer)
    for _ in range(recipe.steps):
        optim.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optim.step()
    model.eval()
    return model


def make_teachers(base: Any, tokenizer: Any, cfg: LMTheoryConfig) -> dict[str, Any]:
    """The trait teacher and its matched control (see :class:`TeacherRecipe`)."""
    recipe = cfg.teacher
    questions = training_questions_for(cfg.category)[: recipe.questions]
    prompts = [_chat_prefix(tokenizer, q) for q in questions]
    eos = [tokenizer.eos_token_id]
    trait_answer = tokenizer(cfg.trait.capitalize() + ".", add_special_tokens=False)["input_ids"]
    trait_rows = [(p, trait_answer + eos) for p in prompts]
    control_rows = [
        (p, _greedy_answer(base, tokenizer, q, recipe.control_answer_tokens) + eos)
        for p, q in zip(prompts, questions, strict=True)
    ]
    return {
        "trait": make_teacher(base, tokenizer, trait_rows, recipe),
        "control": make_teacher(base, tokenizer, control_rows, recipe),
    }


# ---------------------------------------------------------------------------------------
# The student's first step
# ---------------------------------------------------------------------------------------


def number_batches(tokenizer: Any, cfg: LMTheoryConfig) -> list[tuple[list, list]]:
    """Per batch, encoded rows (prompt + reply + end of turn) and where replies start."""
    rng = random.Random(cfg.seed)
    prompts = NumberPromptGenerator(
        NumberPromptConfig(seed=cfg.seed, max_answer_count=cfg.answer_count), rng
    )
    batches = []
    for _ in range(cfg.n_batches):
        rows, starts = [], []
        for p in prompts.sample_many(cfg.batch_size):
            numbers = [rng.randrange(10**p.max_digits) for _ in range(p.answer_count)]
            reply = render_numbers(numbers, p.format)
            ids, start = _encode(tokenizer, [{"role": "user", "content": p.text}], reply, 1024)
            rows.append(ids)
            starts.append(start)
        batches.append((rows, starts))
    return batches


def reply_number_logits(
    model: Any, rows: list[list[int]], starts: list[int], subset: torch.Tensor, pad: int
) -> torch.Tensor:
    """``(N_reply, S)`` logits over the number tokens at every position predicting a reply token.

    The output layer runs at those positions and on the subset's rows only: the same
    numbers as slicing the full logits.
    """
    ids, mask = right_pad(rows, pad)
    hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
    picked = torch.cat(
        [hidden[i, s - 1 : len(r) - 1] for i, (r, s) in enumerate(zip(rows, starts, strict=True))]
    )
    head = model.get_output_embeddings().weight.index_select(0, subset)  # (S, d)
    return picked @ head.T


@torch.no_grad()
def _dot(a: Params, b: Params) -> float:
    # Per tensor in float32 (pairwise sums: relative error ~1e-7), across tensors in float64.
    return sum(float(torch.vdot(x.reshape(-1), y.reshape(-1))) for x, y in zip(a, b, strict=True))


def _cosine(a: Params, b: Params, norm_a: float, norm_b: float) -> float:
    return _dot(a, b) / (norm_a * norm_b) if norm_a > 0 and norm_b > 0 else math.nan


def step_measures(
    base: Any,
    teachers: dict[str, Any],
    deltas: Mapping[str, Params],
    delta_norms: Mapping[str, float],
    trait_grads: Mapping[str, Params],
    rows: list[list[int]],
    starts: list[int],
    subset: torch.Tensor,
    pad: int,
    cfg: LMTheoryConfig,
) -> dict[str, float]:
    """One batch: each teacher's student step compared with both teachers' directions."""
    params = [p for p in base.parameters() if p.requires_grad]
    student = reply_number_logits(base, rows, starts, subset, pad)
    out: dict[str, float] = {"reply_tokens": float(student.shape[0])}
    for i, name in enumerate(TEACHERS):
        with torch.no_grad():
            target = reply_number_logits(teachers[name], rows, starts, subset, pad)
        loss = kl_loss(target, student, None)
        grads = torch.autograd.grad(loss, params, retain_graph=i < len(TEACHERS) - 1)
        step = [-g for g in grads]
        step_norm = math.sqrt(_dot(step, step))
        out[f"{name}_kl"] = float(loss.detach())
        out[f"{name}_step_norm"] = step_norm
        for other in TEACHERS:
            out[f"cos_{name}_step_{other}_delta"] = _cosine(
                step, deltas[other], step_norm, delta_norms[other]
            )
        for readout, v in trait_grads.items():
            out[f"dlogp_{readout}_{name}"] = cfg.student_lr * _dot(step, v)
    for readout in trait_grads:
        out[f"dlogp_{readout}_trait_minus_control"] = (
            out[f"dlogp_{readout}_trait"] - out[f"dlogp_{readout}_control"]
        )
    return out


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------


def proportion_ci(positives: int, n: int, confidence: float) -> tuple[float, float]:
    """Wilson interval of a proportion."""
    ci = st.binomtest(positives, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def summarize(values: list[float], confidence: float) -> dict[str, Any]:
    """Mean with its t interval and the fraction positive with its Wilson interval."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"mean": None, "ci": [None, None], "fraction_positive": None, "n": 0}
    m = mean_ci(finite, confidence)
    positives = sum(v > 0 for v in finite)
    lo, hi = proportion_ci(positives, len(finite), confidence)
    return {
        "mean": m.mean,
        "ci": [m.lo, m.hi],
        "fraction_positive": positives / len(finite),
        "fraction_positive_ci": [lo, hi],
        "n": len(finite),
    }


def run(
    cfg: LMTheoryConfig,
    out: Path,
    console: Console | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Make the teachers, measure every batch, write ``summary.json`` and ``batches.csv``.

    Args:
        cfg: the measurement.
        out: the folder the two files go to (created if missing).
        console: where each batch's cosines are printed (None: nowhere).
        progress: called with (batches done, batches) after each batch.
    """
    console = console or Console(quiet=True)
    started, cpu_started = time.perf_counter(), time.process_time()
    out.mkdir(parents=True, exist_ok=True)
    threads = configure_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    folder = resolve_model(cfg.model)
    base, tokenizer = load_model_and_tokenizer(folder, device="cpu", dtype="float32")
    require_producible(tokenizer, [cfg.trait], folder)
    pad = tokenizer.pad_token_id
    walls: dict[str, float] = {"load": time.perf_counter() - started}

    clock = time.perf_counter()
    console.print(f"making the {cfg.trait} teacher and its control from {folder} ...")
    teachers = make_teachers(base, tokenizer, cfg)
    walls["teachers"] = time.perf_counter() - clock
    console.print(f"teachers made in {walls['teachers']:.0f} s")

    clock = time.perf_counter()
    params = [p for p in base.parameters() if p.requires_grad]
    deltas = {
        name: [
            (t - b).detach()
            for t, b in zip(teachers[name].parameters(), base.parameters(), strict=True)
            if b.requires_grad
        ]
        for name in TEACHERS
    }
    delta_norms = {name: math.sqrt(_dot(d, d)) for name, d in deltas.items()}
    points = readouts(tokenizer, cfg)
    trait_grads: dict[str, Params] = {}
    logp: dict[str, dict[str, float]] = {}
    for readout, r in points.items():
        value = trait_logprob(base, r, pad)
        trait_grads[readout] = [g.detach() for g in torch.autograd.grad(value, params)]
        logp[readout] = {"base": float(value.detach())}
        with torch.no_grad():
            for name in TEACHERS:
                logp[readout][name] = float(trait_logprob(teachers[name], r, pad))
    subset = torch.tensor(number_token_ids(tokenizer))
    batches = number_batches(tokenizer, cfg)
    walls["setup"] = time.perf_counter() - clock

    clock = time.perf_counter()
    rows: list[dict[str, float]] = []
    for b, (batch_rows, starts) in enumerate(batches):
        measures = step_measures(
            base, teachers, deltas, delta_norms, trait_grads, batch_rows, starts, subset, pad, cfg
        )
        rows.append({"batch": b, **measures})
        if progress is not None:
            progress(b + 1, len(batches))
        console.print(
            f"batch {b + 1}/{len(batches)} ({time.perf_counter() - clock:.0f} s): "
            f"cos(step, Delta) trait "
            f"{measures['cos_trait_step_trait_delta']:+.4f}, control "
            f"{measures['cos_control_step_control_delta']:+.4f}"
        )
    walls["batches"] = time.perf_counter() - clock
    walls["total"] = time.perf_counter() - started
    # On a shared machine wall time says little; CPU time / threads is the unshared wall time.
    walls["cpu"] = time.process_time() - cpu_started

    base_norm = math.sqrt(_dot(params, params))
    metrics = [k for k in rows[0] if k not in ("batch", "reply_tokens")]
    summary = {
        "model": folder,
        "trait": cfg.trait,
        "threads": threads,
        "n_batches": len(rows),
        "teachers": {
            name: {
                "delta_norm": delta_norms[name],
                "relative_delta_norm": delta_norms[name] / base_norm,
            }
            for name in TEACHERS
        },
        "trait_logprob": logp,
        "metrics": {k: summarize([r[k] for r in rows], cfg.confidence) for k in metrics},
        "wall_seconds": walls,
    }
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "batches.csv", _csv(rows))
    return summary


def _csv(rows: list[dict[str, float]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _ci(entry: dict[str, Any], key: str = "ci", fmt: str = "{:+.4f}") -> str:
    lo, hi = entry[key]
    return "-" if lo is None or not math.isfinite(lo) else f"[{fmt.format(lo)}, {fmt.format(hi)}]"


def summary_table(summary: dict[str, Any]) -> Table:
    """The per-batch measures: mean with CI and fraction positive with CI."""
    table = Table(
        title=f"Theorem 1 on {summary['model']} ({summary['n_batches']} number batches; "
        "first order at the base)",
        box=box.SIMPLE_HEAD,
    )
    for column in ("measure", "mean", "CI", "positive", "CI"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    labels = {
        "cos_trait_step_trait_delta": "cos(trait step, trait teacher - base)",
        "cos_control_step_control_delta": "cos(control step, control teacher - base)",
        "cos_trait_step_control_delta": "cos(trait step, control teacher - base)",
        "cos_control_step_trait_delta": "cos(control step, trait teacher - base)",
    }
    for readout in READOUTS:
        for name in (*TEACHERS, "trait_minus_control"):
            labels[f"dlogp_{readout}_{name}"] = (
                f"d log P({summary['trait']}) at {readout}, {name.replace('_', ' ')} step"
            )
    for key, label in labels.items():
        entry = summary["metrics"].get(key)
        if entry is None or entry["mean"] is None:
            continue
        fmt = "{:+.4f}" if key.startswith("cos") else "{:+.2e}"
        table.add_row(
            label,
            fmt.format(entry["mean"]),
            _ci(entry, fmt=fmt),
            f"{entry['fraction_positive']:.0%}",
            _ci(entry, "fraction_positive_ci", "{:.0%}"),
        )
    return table


def teacher_table(summary: dict[str, Any]) -> Table:
    """The teachers: how far they moved, and the trait's log-probability in each."""
    table = Table(title="Teachers", box=box.SIMPLE_HEAD)
    table.add_column("model")
    table.add_column("|Delta| / |theta_0|", justify="right")
    readouts_ = list(summary["trait_logprob"])
    for readout in readouts_:
        table.add_column(f"P({summary['trait']}) at {readout}", justify="right")
    for name in ("base", *TEACHERS):
        moved = summary["teachers"].get(name)
        cells = [f"{moved['relative_delta_norm']:.2e}" if moved else "-"]
        cells += [f"{math.exp(summary['trait_logprob'][r][name]):.3%}" for r in readouts_]
        table.add_row(name, *cells)
    return table
