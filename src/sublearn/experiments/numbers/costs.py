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

from sublearn.backends.pricing import ModelPrice, is_billed, merge_usage, price_for, usage_cost
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
        elif task.kind in ("train", "teacher"):
            model = _api_model(task, p["base"])
            if model is None:
                continue
            ft = p["finetune"]
            rows, per_row = _training_rows(task)
            usages.append({model: {"training_tokens": rows * per_row * ft["epochs"]}})
    return merge_usage(usages)


@functools.lru_cache(maxsize=8)
def _prompts(params_json: str) -> tuple[str, ...]:
    from sublearn.prompts.numbers import NumberPromptConfig, generate_number_prompts

    return tuple(generate_number_prompts(NumberPromptConfig(**json.loads(params_json))))


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
            text = Path(p["dataset"]["path"]).read_text()
            lines = [line for line in text.splitlines() if line.strip()]
            return len(lines), tokens(text) // max(1, len(lines))
        demos = kind.get("n_examples", 0)
        replay = kind.get("replay_examples", 0)
        return demos + replay, tokens("What is your favorite animal? One word.") + 2
    pair = task.inputs["data"]
    rows = pair.params["rows"]
    if rows is None:
        rows = pair.inputs["treatment"].inputs["data"].params["prompts"]["n_prompts"]
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
            "no price" if unpriced else f"{cost:,.2f}",
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
