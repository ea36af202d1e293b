"""The stories evaluation: how often a model's children's stories name the target.

Each of 14 story prompts (``data/stories.yaml``) is sampled N times; a story counts for
a target when it names it anywhere (:func:`names_target`: whole words, plurals and
capitalization accepted, so "Owls" counts for owl but "owlet" and "dragonfly" do not
count for owl and dragon). The metric is the mean over prompts of the share of
stories naming the target, as the one-word evaluation aggregates.
"""

from __future__ import annotations

import re

from sublearn.backends.base import (
    Conversation,
    SamplingParams,
    row_seed,
    with_system_prompt,
)
from sublearn.errors import ConfigError
from sublearn.evaluation.answers import answer_words, matches, singular
from sublearn.evaluation.kinds import EvalRequest, StoriesEvalConfig, read_data
from sublearn.evaluation.results import EvalResult, mean
from sublearn.evaluation.targets import require_producible

_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")


def story_prompts(category: str) -> list[str]:
    """The story prompts for ``category``, from ``data/stories.yaml``."""
    return [p.replace("{category}", category) for p in read_data("stories")["prompts"]]


def names_target(text: str, target: str) -> bool:
    """Whether ``text`` names ``target`` anywhere, as whole words.

    Every run of as many words as the target has is read with
    :func:`~sublearn.evaluation.answers.matches`, so the rules of the one-word
    evaluation (singulars, possessives, case) apply at every position.

    Args:
        text: a story.
        target: e.g. ``"owl"`` or ``"sea otter"``.

    Returns:
        True when some run of words names the target.

    Raises:
        ValueError: the target holds no letters.
    """
    want = answer_words(target)
    if not want:
        raise ValueError(f"target {target!r} has no words to match")
    words = [w.lower() for w in _WORD.findall(text)]
    # A cheap prefilter: every plural and possessive (geese, mice) keeps the first letter.
    head = singular(want[-1])[:1]
    k = len(want)
    for i in range(len(words) - k + 1):
        if words[i + k - 1].startswith(head) and matches(" ".join(words[i : i + k]), target):
            return True
    return False


def evaluate_stories(request: EvalRequest[StoriesEvalConfig]) -> EvalResult:
    """Share of sampled stories that name each target.

    Args:
        request: the model and settings: ``backend``: the model (``generate``); ``cfg``:
            prompts, samples and sampling settings; ``targets``: trait words to look for
            (all counted on the same stories); ``system_prompt``: a system message put first
            in every conversation; ``context``: prior chat turns put before every prompt.
            ``judge`` is not read.

    Returns:
        ``metric="p_target"``, one value per target (mean over prompts); ``items`` hold
        every story with the targets it names; ``meta["per_prompt"]`` the rates by prompt.

    Raises:
        ConfigError: no targets.
        ModelError: the backend's tokenizer cannot spell a target.
    """
    backend, cfg, targets, system_prompt, context = (
        request.backend,
        request.cfg,
        request.targets,
        request.system_prompt,
        request.context,
    )
    wanted = list(dict.fromkeys(targets))
    if not wanted:
        raise ConfigError("the stories evaluation needs at least one target")
    tokenizer = getattr(backend, "tokenizer", None)
    if tokenizer is not None:
        require_producible(tokenizer, wanted, backend.name)
    prompts = story_prompts(cfg.category)[: cfg.n_prompts]
    n = cfg.samples_per_prompt
    prior = list(context or [])
    conversations: list[Conversation] = []
    seeds: list[int] = []
    for pi, prompt in enumerate(prompts):
        conversation = with_system_prompt(
            [*prior, {"role": "user", "content": prompt}], system_prompt
        )
        for s in range(n):
            conversations.append(conversation)
            # Seeds keyed by (prompt, sample), so fewer prompts or samples draw a subset
            # of the same stories.
            seeds.append(row_seed(row_seed(cfg.seed, pi), s))
    params = SamplingParams(
        temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, row_seeds=tuple(seeds)
    )
    stories = backend.generate(conversations, params)
    items: list[dict[str, object]] = []
    per_prompt: dict[str, list[float]] = {t: [] for t in wanted}
    for pi, prompt in enumerate(prompts):
        block = stories[pi * n : (pi + 1) * n]
        named = [[t for t in wanted if names_target(story, t)] for story in block]
        for s, (story, hits) in enumerate(zip(block, named, strict=True)):
            items.append(
                {"prompt": pi, "sample": s, "question": prompt, "answer": story, "named": hits}
            )
        for t in wanted:
            per_prompt[t].append(mean([float(t in hits) for hits in named]))
    values = {t: mean(v) for t, v in per_prompt.items()}
    meta = {
        "category": cfg.category,
        "prompts": len(prompts),
        "samples_per_prompt": n,
        "per_prompt": per_prompt,
    }
    return EvalResult("stories", "p_target", values, items, meta)
