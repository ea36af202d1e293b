"""``run_defences``: apply a config's defences to a dataset and write the cleaned copy.

Each defence sees the records as the defences before it left them, so scores are taken
on those records (a reply canonicalized first is scored canonicalized). Models are
opened one at a time, only for the defences that need them; scores are cached by model,
system prompt, prompt and reply, so two defences never score the same row twice. When a
model is open, it also scores what the next defences will ask of it, as long as no
defence in between rewrites prompts or replies, so that e.g. ``[mask_logratio,
drop_lls]`` opens the base once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from sublearn.audit.data import Row
from sublearn.audit.scoring import open_scorer, reply_logprob, token_logratio, token_scores
from sublearn.backends.base import SamplingParams, TokenScore, TokenScorer, row_seed
from sublearn.defend import transforms as tf
from sublearn.defend.config import (
    CanonicalizeDefence,
    DefendConfig,
    DropLLSDefence,
    MaskLogRatioDefence,
    MaskRandomDefence,
    MixTeachersDefence,
    ParaphraseDefence,
    ReplaceLogRatioDefence,
    ScoreKey,
    ShuffleNumbersDefence,
)
from sublearn.errors import ConfigError, DataError
from sublearn.finetune.sft import read_chat_jsonl
from sublearn.registry import Registry
from sublearn.runs import atomic_write_json, atomic_write_text

Log = Callable[[str], None]


def report_path(out: str | Path) -> Path:
    """Where the report of a run writing ``out`` goes: ``<out>.report.json``."""
    return Path(f"{out}.report.json")


def config_problems(cfg: DefendConfig) -> list[str]:
    """What each defence needs from the config and lacks, one line per problem."""
    return [
        f"defence {at} ({defence.type}) {why}"
        for at, defence in enumerate(cfg.defences)
        for why in defence.lacks(cfg)
    ]


def uses_models(cfg: DefendConfig) -> bool:
    """Whether any defence of ``cfg`` opens a model."""
    return any(DEFENCES.metadata(d.type)["opens_models"] for d in cfg.defences)


class _Scores:
    """Token scores by (model, system prompt) and by row text, computed on demand."""

    def __init__(self, cfg: DefendConfig, log: Log) -> None:
        self.cfg = cfg
        self.log = log
        self.cache: dict[ScoreKey, dict[str, list[TokenScore]]] = {}
        self.opened: list[str] = []

    def ensure(self, at: int, records: Sequence[tf.Record]) -> None:
        """Score ``records`` for defence ``at``, and for later ones on the same models."""
        defences = self.cfg.defences
        now = defences[at].score_needs(self.cfg)
        later: list[ScoreKey] = []
        for defence in defences[at + 1 :]:
            later += defence.score_needs(self.cfg)
            if not DEFENCES.metadata(defence.type)["keeps_text"]:
                break
        for ref in dict.fromkeys(ref for ref, _ in now):
            keys = [k for k in dict.fromkeys([*now, *later]) if k[0] == ref]
            todo = {key: self._missing(key, records) for key in keys}
            if not any(todo[key] for key in now if key[0] == ref):
                continue
            self.log(f"opening {ref}")
            self.opened.append(ref)
            # open_scorer checked the backend is a TokenScorer; its declared type is Backend.
            with open_scorer(
                ref,
                device=self.cfg.device,
                dtype=self.cfg.dtype,
                batch_size=self.cfg.batch_size,
            ) as backend:
                scorer = cast(TokenScorer, backend)
                for key, rows in todo.items():
                    if not rows:
                        continue
                    prompt = "with the trait prompt" if key[1] else "without a system prompt"
                    self.log(f"scoring {len(rows)} replies under {ref} {prompt}")
                    scores = token_scores(scorer, rows, system_prompt=key[1])
                    self.cache.setdefault(key, {}).update(
                        zip((_text_key(r.prompt, r.reply) for r in rows), scores, strict=True)
                    )

    def get(self, key: ScoreKey, records: Sequence[tf.Record]) -> list[list[TokenScore]]:
        """The cached scores of ``records`` under ``key``, in order."""
        table = self.cache[key]
        return [table[_text_key(tf.prompt_of(r), tf.reply_of(r))] for r in records]

    def _missing(self, key: ScoreKey, records: Sequence[tf.Record]) -> list[Row]:
        table = self.cache.get(key, {})
        rows: dict[str, Row] = {}
        for i, record in enumerate(records):
            text = _text_key(tf.prompt_of(record), tf.reply_of(record))
            if text not in table and text not in rows:
                rows[text] = Row(i, tf.prompt_of(record), tf.reply_of(record))
        return list(rows.values())


def _text_key(prompt: Any, reply: str) -> str:
    return json.dumps([prompt, reply], sort_keys=True, ensure_ascii=False)


def _paraphrases(
    defence: ParaphraseDefence, cfg: DefendConfig, records: Sequence[tf.Record], log: Log
) -> list[str | None]:
    """Per row, the model's rewording of its last user message (None: it has none)."""
    from sublearn.backends.registry import open_backend

    places = ((i, tf.last_user_index(r)) for i, r in enumerate(records))
    todo = [(i, at) for i, at in places if at is not None]
    out: list[str | None] = [None] * len(records)
    if not todo:
        return out
    from sublearn.backends.providers import backend_options
    from sublearn.backends.refs import ModelRef

    ref = ModelRef.parse(defence.model)
    options = backend_options(
        ref, cfg.providers, device=cfg.device, dtype=cfg.dtype, batch_size=cfg.batch_size
    )
    log(f"opening {defence.model} to paraphrase {len(todo)} requests")
    with open_backend(ref, **options) as backend:
        for start in range(0, len(todo), cfg.batch_size):
            part = todo[start : start + cfg.batch_size]
            conversations = [
                tf.paraphrase_request(defence.instruction, records[i]["messages"][at]["content"])
                for i, at in part
            ]
            # Seeds by row position: a row's paraphrase does not depend on the batching.
            params = SamplingParams(
                temperature=defence.temperature,
                max_new_tokens=defence.max_new_tokens,
                row_seeds=tuple(row_seed(defence.seed, i) for i, _ in part),
            )
            for (i, _), text in zip(part, backend.generate(conversations, params), strict=True):
                out[i] = text
    return out


@dataclass(frozen=True)
class Step:
    """One defence applied to the records the defences before it left.

    Attributes:
        at: its place in ``cfg.defences``.
        defence: its config (one member of ``defend.config.Defence``).
        records: the rows it cleans.
        cfg: the run's config.
        scores: token scores, taken for the defences that read them before they run.
        others: other teachers' rows by file (``mix_teachers``).
        log: one line per model opened and scoring pass.
    """

    at: int
    defence: Any
    records: list[tf.Record]
    cfg: DefendConfig
    scores: _Scores
    others: dict[str, list[tf.Record]]
    log: Log

    def scored(self, key: ScoreKey) -> list[list[TokenScore]]:
        """The records' token scores under ``key``."""
        return self.scores.get(key, self.records)


StepFn = Callable[[Step], tuple[list[tf.Record], tf.Stats]]
DEFENCES: Registry[StepFn] = Registry("defence kind", expected="a defence step function")
"""``type`` -> its step ``(Step) -> (records, stats)``; metadata ``keeps_text``: every kept
row's prompt and reply stay as they are (scores taken before it still hold after it),
``opens_models``: it opens a model."""


@DEFENCES("drop_lls", keeps_text=True, opens_models=True)
def _drop_lls(step: Step) -> tuple[list[tf.Record], tf.Stats]:
    d: DropLLSDefence = step.defence
    base = step.cfg.base
    assert base is not None
    shifted = step.scored((base, d.trait_prompt(step.cfg)))
    plain = step.scored((base, None))
    lls = reply_logprob(shifted, d.per_token) - reply_logprob(plain, d.per_token)
    return tf.drop_lls(step.records, lls, d.fraction)


def _logratios(step: Step) -> tuple[Any, list[list[TokenScore]]]:
    teacher, base = step.cfg.teacher, step.cfg.base
    assert teacher is not None and base is not None
    scores = step.scored((teacher, None))
    return token_logratio(scores, step.scored((base, None))), scores


@DEFENCES("mask_logratio", keeps_text=True, opens_models=True)
def _mask_logratio(step: Step) -> tuple[list[tf.Record], tf.Stats]:
    d: MaskLogRatioDefence = step.defence
    ratios, teacher = _logratios(step)
    return tf.mask_logratio(step.records, ratios, teacher, d.fraction)


@DEFENCES("replace_logratio", keeps_text=False, opens_models=True)
def _replace_logratio(step: Step) -> tuple[list[tf.Record], tf.Stats]:
    d: ReplaceLogRatioDefence = step.defence
    ratios, teacher = _logratios(step)
    return tf.replace_logratio(step.records, ratios, teacher, d.fraction, d.seed)


@DEFENCES("mask_random", keeps_text=True, opens_models=False)
def _mask_random(step: Step) -> tuple[list[tf.Record], tf.Stats]:
    d: MaskRandomDefence = step.defence
    return tf.mask_random(step.records, d.fraction, d.seed)


@DEFENCES("canonicalize", keeps_text=False, opens_models=False)
def _canonicalize(step: Step) -> tuple[list[tf.Record], tf.Stats]:
    d: CanonicalizeDefence = step.defence
    return tf.canonicalize(step.records, d.sort, d.separator)


@DEFENCES("shuffle_numbers", keeps_text=False, opens_models=False)
def _shuffle_numbers(step: Step) -> tuple[list[tf.Record], tf.Stats]:
    d: ShuffleNumbersDefence = step.defence
    return tf.shuffle_numbers(step.records, d.seed)


@DEFENCES("paraphrase", keeps_text=False, opens_models=True)
def _paraphrase(step: Step) -> tuple[list[tf.Record], tf.Stats]:
    d: ParaphraseDefence = step.defence
    return tf.paraphrase(step.records, _paraphrases(d, step.cfg, step.records, step.log))


@DEFENCES("mix_teachers", keeps_text=False, opens_models=False)
def _mix_teachers(step: Step) -> tuple[list[tf.Record], tf.Stats]:
    d: MixTeachersDefence = step.defence
    others = [step.others[path] for path in d.others]
    return tf.mix_teachers(step.records, others, d.share, d.seed, names=d.others)


def _apply(step: Step) -> tuple[list[tf.Record], tf.Stats]:
    if step.defence.score_needs(step.cfg):
        step.scores.ensure(step.at, step.records)
    return DEFENCES.get(step.defence.type)(step)


def _masked(records: Sequence[tf.Record]) -> dict[str, int]:
    return {
        "rows_masked": sum(bool(r.get(tf.LOSS_MASK)) for r in records),
        "characters_masked": sum(tf.masked_characters(r) for r in records),
        "reply_characters": sum(len(tf.reply_of(r)) for r in records),
    }


NUMBERS_ONLY = ("canonicalize", "shuffle_numbers")
"""Defences that rewrite number lists: on code or chain-of-thought they destroy the data."""


def _require_number_data(cfg: DefendConfig, records: list[Any]) -> None:
    """Refuse a numbers-only defence on data whose replies are mostly not number lists.

    Raises:
        ConfigError: naming the defence, the data and how many replies have words in them.
    """
    import re

    kinds = [d.type for d in cfg.defences if d.type in NUMBERS_ONLY]
    if not kinds or not records:
        return
    worded = sum(bool(re.search(r"[^\W\d_]{3,}", tf.reply_of(r))) for r in records)
    if worded * 2 > len(records):
        raise ConfigError(
            f"{', '.join(dict.fromkeys(kinds))} rewrites number lists, but {worded:,} of "
            f"{len(records):,} replies in {cfg.data} hold words (code or chain-of-thought "
            "data?): it would turn them into bare numbers; use a defence that fits the data"
        )


def run_defences(
    cfg: DefendConfig, log: Log | None = None, write_to: Path | None = None
) -> dict[str, Any]:
    """Apply ``cfg.defences`` in order to ``cfg.data``; write ``cfg.out`` and its report.

    Args:
        cfg: the run's config.
        log: called with one line per model opened and scoring pass.
        write_to: write the cleaned copy (and its report beside it) here instead of
            ``cfg.out`` (an engine task's output folder); the report still names ``cfg.out``.

    Returns:
        The report written to ``<out>.report.json``: rows in and out, characters masked
        and, per defence, its settings and stats.

    Raises:
        ConfigError: a defence lacks the base, teacher or trait it needs (before any
            data is read or model opened).
        DataError: a dataset is missing or malformed, or no row is left to write.
    """
    problems = config_problems(cfg)
    if problems:
        raise ConfigError("cannot run the defences:\n  - " + "\n  - ".join(problems))
    if cfg.trait is not None:  # a word a model cannot spell would drop or mask by <unk>
        from sublearn.evaluation.spelling import require_spellable

        require_spellable(cfg.trait.word, [cfg.base, cfg.teacher], "trait")
    say: Log = log or (lambda _line: None)
    paths = [cfg.data, *(p for d in cfg.defences if d.type == "mix_teachers" for p in d.others)]
    for path in dict.fromkeys(paths):
        if not Path(path).is_file():
            raise DataError(f"{path}: no such dataset file")
    records = read_chat_jsonl(Path(cfg.data))
    _require_number_data(cfg, records)
    others = {path: read_chat_jsonl(Path(path)) for path in dict.fromkeys(paths[1:])}
    rows_in = len(records)

    scores = _Scores(cfg, say)
    steps = []
    for at, defence in enumerate(cfg.defences):
        records, stats = _apply(Step(at, defence, records, cfg, scores, others, say))
        steps.append(
            {"type": defence.type, "settings": defence.model_dump(mode="json"), "stats": stats}
        )
    if not records:
        raise DataError(f"{cfg.data}: the defences left no row to write")

    out = write_to if write_to is not None else Path(cfg.out)
    atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    report = {
        "data": cfg.data,
        "out": cfg.out,
        "rows_in": rows_in,
        "rows_out": len(records),
        **_masked(records),
        "models_opened": scores.opened,
        "defences": steps,
        "config": cfg.model_dump(mode="json"),
    }
    atomic_write_json(report_path(out), report)
    return report


__all__ = [
    "DEFENCES",
    "Step",
    "config_problems",
    "report_path",
    "run_defences",
    "uses_models",
]
