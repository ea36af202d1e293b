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
from pathlib import Path
from typing import Any, cast

from sublearn.audit.data import Row
from sublearn.audit.scoring import open_scorer, reply_logprob, token_logratio, token_scores
from sublearn.backends.base import SamplingParams, TokenScore, TokenScorer, row_seed
from sublearn.defend import transforms as tf
from sublearn.defend.config import (
    CanonicalizeDefence,
    Defence,
    DefendConfig,
    DropLLSDefence,
    MaskLogRatioDefence,
    MaskRandomDefence,
    ParaphraseDefence,
    ReplaceLogRatioDefence,
    ShuffleNumbersDefence,
)
from sublearn.errors import ConfigError, DataError
from sublearn.finetune.sft import read_chat_jsonl
from sublearn.runs import atomic_write_json, atomic_write_text

Log = Callable[[str], None]
ScoreKey = tuple[str, str | None]
"""A model ref and the system prompt its scores were taken under (None: none)."""

# Defences that leave every kept row's prompt and reply as they are: scores taken before
# them still hold after them.
_KEEPS_TEXT = frozenset({"drop_lls", "mask_logratio", "mask_random"})
_OPENS_MODELS = frozenset({"drop_lls", "mask_logratio", "replace_logratio", "paraphrase"})


def report_path(out: str | Path) -> Path:
    """Where the report of a run writing ``out`` goes: ``<out>.report.json``."""
    return Path(f"{out}.report.json")


def config_problems(cfg: DefendConfig) -> list[str]:
    """What each defence needs from the config and lacks, one line per problem."""
    problems = []
    for at, defence in enumerate(cfg.defences):
        name = f"defence {at} ({defence.type})"
        if defence.type == "drop_lls":
            if cfg.base is None:
                problems.append(f"{name} needs the base model: set base (--base)")
            if defence.system_prompt is None and cfg.trait is None:
                problems.append(
                    f"{name} needs the trait (--trait) or its own system_prompt to score rows"
                )
        elif defence.type in ("mask_logratio", "replace_logratio"):
            problems += [
                f"{name} needs the {role} model: set {role} (--{role})"
                for role in ("teacher", "base")
                if getattr(cfg, role) is None
            ]
    return problems


def uses_models(cfg: DefendConfig) -> bool:
    """Whether any defence of ``cfg`` opens a model."""
    return any(d.type in _OPENS_MODELS for d in cfg.defences)


def score_needs(defence: Defence, cfg: DefendConfig) -> list[ScoreKey]:
    """The token scores a defence reads, as (model, system prompt) pairs."""
    if isinstance(defence, DropLLSDefence):
        assert cfg.base is not None
        return [(cfg.base, lls_system_prompt(defence, cfg)), (cfg.base, None)]
    if defence.type in ("mask_logratio", "replace_logratio"):
        assert cfg.teacher is not None and cfg.base is not None
        return [(cfg.teacher, None), (cfg.base, None)]
    return []


def lls_system_prompt(defence: DropLLSDefence, cfg: DefendConfig) -> str:
    """The trait prompt ``drop_lls`` scores under: its own, or the trait's preference prompt."""
    if defence.system_prompt is not None:
        return defence.system_prompt
    from sublearn.prompts.persona import preference_system_prompt

    assert cfg.trait is not None
    return preference_system_prompt(cfg.trait.word, cfg.trait.category)


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
        now = score_needs(defences[at], self.cfg)
        later: list[ScoreKey] = []
        for defence in defences[at + 1 :]:
            later += score_needs(defence, self.cfg)
            if defence.type not in _KEEPS_TEXT:
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


def _apply(
    at: int,
    defence: Defence,
    records: list[tf.Record],
    cfg: DefendConfig,
    scores: _Scores,
    others: dict[str, list[tf.Record]],
    log: Log,
) -> tuple[list[tf.Record], tf.Stats]:
    if score_needs(defence, cfg):
        scores.ensure(at, records)
    if isinstance(defence, DropLLSDefence):
        assert cfg.base is not None
        shifted = scores.get((cfg.base, lls_system_prompt(defence, cfg)), records)
        plain = scores.get((cfg.base, None), records)
        lls = reply_logprob(shifted, defence.per_token) - reply_logprob(plain, defence.per_token)
        return tf.drop_lls(records, lls, defence.fraction)
    if isinstance(defence, MaskLogRatioDefence | ReplaceLogRatioDefence):
        assert cfg.teacher is not None and cfg.base is not None
        teacher = scores.get((cfg.teacher, None), records)
        ratios = token_logratio(teacher, scores.get((cfg.base, None), records))
        if isinstance(defence, MaskLogRatioDefence):
            return tf.mask_logratio(records, ratios, teacher, defence.fraction)
        return tf.replace_logratio(records, ratios, teacher, defence.fraction, defence.seed)
    if isinstance(defence, MaskRandomDefence):
        return tf.mask_random(records, defence.fraction, defence.seed)
    if isinstance(defence, CanonicalizeDefence):
        return tf.canonicalize(records, defence.sort, defence.separator)
    if isinstance(defence, ShuffleNumbersDefence):
        return tf.shuffle_numbers(records, defence.seed)
    if isinstance(defence, ParaphraseDefence):
        return tf.paraphrase(records, _paraphrases(defence, cfg, records, log))
    return tf.mix_teachers(
        records,
        [others[path] for path in defence.others],
        defence.share,
        defence.seed,
        names=defence.others,
    )


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
        records, stats = _apply(at, defence, records, cfg, scores, others, say)
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
    "config_problems",
    "lls_system_prompt",
    "report_path",
    "run_defences",
    "score_needs",
    "uses_models",
]
