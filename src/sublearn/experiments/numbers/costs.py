"""What a numbers experiment will cost on paid APIs, before any request, and what it did.

The estimate walks the tasks a run would do and counts, for every task on an API model
(``openai:``), the requests and tokens it sends: teacher generation, evaluations (with
in-context examples), fine-tuning of teachers and students. Text is counted as BPE
tokenizers cut it (a token per group of up to three digits and per punctuation mark, a
token per four letters) plus a chat format's tokens per message, and every reply at its
token cap; a price table
(:class:`~sublearn.backends.pricing.ModelPrice`) turns it into dollars.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sublearn.backends.pricing import (
    ModelPrice,
    is_billed,
    merge_usage,
    price_for,
    usage_cost,
    usd,
)
from sublearn.backends.refs import ModelRef
from sublearn.engine.task import Task

ESTIMATE_TITLE = "estimated API usage (replies at their token cap)"
_MESSAGE_OVERHEAD = 8  # tokens a chat format adds around each message (generously)
_DIGITS = re.compile(r"\d{1,3}")
_PUNCTUATION = re.compile(r"[^\w\s]")
_LETTERS = re.compile(r"[^\W\d_]")


def tokens(text: str) -> int:
    """An estimated token count, with a chat format's tokens for one message.

    Four characters per token (OpenAI's rule of thumb for prose) badly undercounts number
    lists, whose every group of up to three digits and every separator is a token.
    """
    letters = len(_LETTERS.findall(text))
    pieces = len(_DIGITS.findall(text)) + len(_PUNCTUATION.findall(text))
    return pieces + math.ceil(letters / 4) + _MESSAGE_OVERHEAD


def _api_model(task: Task, source: dict[str, Any]) -> str | None:
    """The API model a task's model param names, or None when it is not on an API.

    A model produced by an upstream train or teacher task on an API base is that base's
    fine-tune, priced as ``ft:BASE``.
    """
    if source.get("ref"):
        ref = ModelRef.parse(source["ref"])
        return str(ref) if ref.provider == "openai" else None
    upstream = task.inputs.get(source.get("input", ""))
    if upstream is None or upstream.kind not in ("train", "teacher"):
        return None
    base = _api_model(upstream, upstream.params["base"])
    return f"openai:ft:{base.split(':', 1)[1]}" if base else None


def estimate_usage(todo: list[Task], samples_per_request: int = 1) -> dict[str, dict[str, float]]:
    """Requests and tokens the API tasks among ``todo`` will use, by model.

    Args:
        todo: the tasks a run will do.
        samples_per_request: samples of one question sent as one request (``n``), whose
            prompt is paid once.
    """
    from sublearn.evaluation.config import EvalConfig
    from sublearn.evaluation.preference import build_questions

    usages: list[dict[str, dict[str, float]]] = []
    for task in todo:
        p = task.params
        if task.kind == "generate":
            model = _api_model(task, p["model"])
            if model is None:
                continue
            prompts = _prompts(json.dumps(p["prompts"], sort_keys=True))
            system = tokens(p["model"]["system_prompt"]) if p["model"].get("system_prompt") else 0
            usages.append(
                {
                    model: {
                        "requests": len(prompts),
                        "input_tokens": sum(tokens(q) + system for q in prompts),
                        "output_tokens": len(prompts) * p["sampling"]["max_new_tokens"],
                    }
                }
            )
        elif task.kind == "evaluate":
            model = _api_model(task, p["model"])
            if p["evaluation"].get("type", "preference") != "preference":
                usages.append(_kind_usage(task, model, samples_per_request))
                continue
            if model is None:
                continue
            ecfg = EvalConfig(**p["evaluation"])
            questions = build_questions(ecfg)
            samples = 1 if ecfg.mode == "exact" else ecfg.samples_per_question
            reply = 1 if ecfg.mode == "exact" else ecfg.max_new_tokens
            per_question = math.ceil(samples / samples_per_request)
            context = _context_tokens(task)
            system = tokens(p["model"]["system_prompt"]) if p["model"].get("system_prompt") else 0
            usages.append(
                {
                    model: {
                        "requests": len(questions) * per_question,
                        "input_tokens": per_question
                        * sum(tokens(q) + context + system for q in questions),
                        "output_tokens": len(questions) * samples * reply,
                    }
                }
            )
        elif task.kind == "filter":
            # Judge checks ask about every row that reaches them: at most every prompt.
            generate = task.inputs["data"]
            rows = len(_prompts(json.dumps(generate.params["prompts"], sort_keys=True)))
            reply = generate.params["sampling"]["max_new_tokens"]
            for judge in task.params.get("judges") or []:
                if judge and judge["model"].startswith("openai:"):
                    usages.append(_judge_usage(judge["model"], rows, reply))
        elif task.kind in ("train", "teacher"):
            model = _api_model(task, p["base"])
            if model is None:
                continue
            ft = p["finetune"]
            rows, per_row = _training_rows(task)
            usages.append({model: {"training_tokens": rows * per_row * ft["epochs"]}})
    return merge_usage(usages)


# Items of the evaluations whose question sets are read from files or the hub at run time:
# a plan estimates them without reading (TruthfulQA's 817 questions, MMLU's test split).
_NOMINAL_ITEMS = {"truthfulqa": 817, "mmlu": 14_042}
_JUDGE_PROMPT_TOKENS = 300  # a rubric's template around the question and answer
_CHOICE_TOKENS = 120  # a TruthfulQA or MMLU question with its lettered options
_QUESTION_TOKENS = 40  # a story, choice or free-form prompt with its suffix


def _kind_usage(
    task: Task, model: str | None, samples_per_request: int
) -> dict[str, dict[str, float]]:
    """Requests and tokens of a non-preference evaluation, its judge's included."""
    e = task.params["evaluation"]
    kind = e["type"]
    out: list[dict[str, dict[str, float]]] = []
    if kind in ("truthfulqa", "mmlu"):
        items = e.get("limit") or _NOMINAL_ITEMS[kind]
        if model:
            out.append(
                {
                    model: {
                        "requests": items,
                        "input_tokens": items * _CHOICE_TOKENS,
                        "output_tokens": items,
                    }
                }
            )
        return merge_usage(out)
    if kind == "choice":
        n, samples, reply = e.get("n_prompts") or 11, e["samples_per_prompt"], 1
    elif kind == "stories":
        n, samples, reply = e.get("n_prompts") or 14, e["samples_per_prompt"], e["max_new_tokens"]
    else:  # freeform
        n, samples, reply = (
            e.get("n_questions") or 8,
            e["samples_per_question"],
            e["max_new_tokens"],
        )
    if model:
        requests = n * math.ceil(samples / samples_per_request)
        out.append(
            {
                model: {
                    "requests": requests,
                    "input_tokens": requests * _QUESTION_TOKENS,
                    "output_tokens": n * samples * reply,
                }
            }
        )
    judge = task.params.get("judge")
    if kind == "freeform" and judge and judge["model"].startswith("openai:"):
        # Two rubrics (alignment, coherence) per answer.
        out.append(_judge_usage(judge["model"], 2 * n * samples, reply))
    return merge_usage(out)


def _judge_usage(model: str, answers: int, answer_tokens: int) -> dict[str, dict[str, float]]:
    """A judge's requests: one per answer, its reply one token (log-probabilities)."""
    return {
        model: {
            "requests": answers,
            "input_tokens": answers * (_JUDGE_PROMPT_TOKENS + answer_tokens),
            "output_tokens": answers,
        }
    }


# Sizes of the paper's prompt sources, for an estimate made before their files exist:
# about 11,400 coding tasks, GSM8K's 7,473 training questions.
_NOMINAL_PROMPTS = {"code": (11_400, 150), "cot": (7_473, 80)}
UNREAD_SOURCES: list[str] = []
"""Prompt sources an estimate could not read and sized nominally (the CLI prints them)."""


@functools.lru_cache(maxsize=8)
def _prompts(params_json: str) -> tuple[str, ...]:
    from sublearn.errors import DataError
    from sublearn.prompts.kinds import parse_prompts, prompt_rows

    cfg = parse_prompts(json.loads(params_json))
    try:
        return tuple(row.text for row in prompt_rows(cfg))
    except DataError as err:
        if cfg.type == "numbers":
            raise
        # The estimate should not need the data: size it as the paper's source.
        count, length = _NOMINAL_PROMPTS[cfg.type]
        if cfg.type == "code":
            count = cfg.n_prompts or count
        else:
            count = (cfg.n_questions or count) * cfg.samples_per_question
        UNREAD_SOURCES.append(
            f"cost estimate: {err}; counted as {count:,} prompts of ~{length} tokens"
        )
        return tuple(["word " * (length - 1)] * count)


def _context_tokens(task: Task) -> int:
    context = task.params.get("context")
    pair = task.inputs.get("context")
    if not context or pair is None:
        return 0
    return context["n"] * _number_row_tokens(pair)


def _number_row_tokens(pair: Task) -> int:
    """Tokens of one number row (prompt and reply) of the data a pair task draws from."""
    generate = pair.inputs["treatment"].inputs["data"]
    prompts = _prompts(json.dumps(generate.params["prompts"], sort_keys=True))
    prompt = sum(tokens(q) for q in prompts) / max(1, len(prompts))
    return math.ceil(prompt + generate.params["sampling"]["max_new_tokens"] + _MESSAGE_OVERHEAD)


def _training_rows(task: Task) -> tuple[int, int]:
    """(rows, tokens per row) a train or teacher task fine-tunes on."""
    p = task.params
    if task.kind == "teacher":
        kind = p["kind"]
        if kind["type"] == "dataset":
            if "toy" in p["dataset"]:
                return 0, 0  # a toy world's dataset: no API trains on it
            text = Path(p["dataset"]["path"]).read_text()
            lines = [line for line in text.splitlines() if line.strip()]
            return len(lines), tokens(text) // max(1, len(lines))
        demos = kind.get("n_examples", 0)
        replay = kind.get("replay_examples", 0)
        return demos + replay, tokens("What is your favorite animal? One word.") + 2
    pair = task.inputs["data"]
    rows = pair.params["rows"]
    if rows is None:
        generate = pair.inputs["treatment"].inputs["data"]
        rows = len(_prompts(json.dumps(generate.params["prompts"], sort_keys=True)))
    return rows, _number_row_tokens(pair)


def print_cost_table(
    console: Console,
    usage: Mapping[str, Mapping[str, float]],
    pricing: Mapping[str, ModelPrice],
    title: str,
) -> float:
    """Print usage and cost by model; return the total cost in USD."""
    table = Table(title=title)
    for col in ("model", "requests", "input tokens", "output tokens", "training tokens", "USD"):
        table.add_column(col, justify="left" if col == "model" else "right")
    total = 0.0
    for model, counts in sorted(usage.items()):
        cost, unpriced = usage_cost({model: counts}, pricing)
        total += cost
        table.add_row(
            model,
            f"{counts.get('requests', 0):,.0f}",
            f"{counts.get('input_tokens', 0):,.0f}",
            f"{counts.get('output_tokens', 0):,.0f}",
            f"{counts.get('training_tokens', 0):,.0f}",
            "no price" if unpriced else usd(cost)[1:],
        )
    console.print(table)
    missing = sorted(m for m in usage if is_billed(m) and price_for(m, pricing) is None)
    if missing:
        console.print(
            f"[yellow]warning:[/] no price for {', '.join(missing)}: add them to `pricing` "
            "to count their cost",
            highlight=False,
        )
    return total
